"""A node's home directory: where each part of the node keeps its files, and its ports.

Layout (also in the README):

    HOME/mailyard.toml   node identity: store URL, port base, node name
    HOME/db/store.sqlite the store (SQLite, WAL), unless mailyard.toml names PostgreSQL
    HOME/queue/          the mail queue (see docs/queue.md)
    HOME/mail/           mailboxes: mail/<domain>/<user>/Maildir (setting mail.root may put
                         them elsewhere, e.g. on a filesystem the nodes share)
    HOME/log/<service>/  multilog-style logs: current, @<tai64n>.s
    HOME/tls/            cert.pem, key.pem (self-signed at init)
    HOME/run/            sockets (spamd.sock, clamav/clamd.sock), pid files, triggers
    HOME/etc/            generated configurations (never edit by hand)
    HOME/var/            state of the field's daemons (Dovecot, spamd, ClamAV)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The standard ports of each listener; the node's port base is added to every one of them so
# that several nodes (and the tests) share one machine without root.
STANDARD_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "pop3": 110,
    "imap": 143,
    "imaps": 993,
    "pop3s": 995,
    "panel": 2443,
}
# spamd and clamd have no port: they listen on unix sockets in HOME/run (issue 16, item 12).
# Listeners whose standard port is a setting (guide 4.1: the alternate SMTP port).
PORT_SETTINGS: dict[str, str] = {"submission": "submission.port", "smtps": "submission.smtps_port"}

CONFIG_NAME = "mailyard.toml"
# mailyard.toml: root's, readable by the mail owner's group (the services read it after
# dropping root; sendmail reads it as the mail owner).
CONFIG_MODE = 0o640
# Where the mailboxes live, below the home, while setting mail.root is empty.
DEFAULT_MAIL_DIR = "mail"


class HomeError(RuntimeError):
    """The home is missing or not a mailyard home."""


# A Home is paths and identity; it never imports the store. When a caller hands no settings
# over (`mail_dir`, `port`), the Home reads them through the loader the store registers when it
# is imported (store.settings_store registers load_settings), so this module imports nothing of
# the layers above it. A list of at most one loader, so no `global` statement is needed.
_SETTINGS_LOADER: list[Callable[[Home], Mapping[str, Any]]] = []


def register_settings_loader(loader: Callable[[Home], Mapping[str, Any]]) -> None:
    """Name how a Home loads its settings from the store (called by store.settings_store)."""
    _SETTINGS_LOADER[:] = [loader]


def _stored_settings(home: Home) -> Mapping[str, Any]:
    if not _SETTINGS_LOADER:
        raise HomeError("no settings were handed over and the store is not loaded in this "
                        "process (import mailyard.store.settings_store first)")
    return _SETTINGS_LOADER[0](home)


@dataclass
class Home:
    root: Path
    db_url: str
    port_base: int = 0
    node_name: str = "node1"
    # The mail root as last resolved from the settings; None until first asked (see mail_dir).
    _mail_root: Path | None = field(default=None, init=False, repr=False, compare=False)

    # ---- finding and creating --------------------------------------------------------------
    @classmethod
    def find(cls, path: str | os.PathLike[str] | None = None) -> Home:
        """The home named by `path`, else by $MAILYARD_HOME."""
        chosen = path or os.environ.get("MAILYARD_HOME")
        if not chosen:
            raise HomeError("no node home given: use --home DIR or set MAILYARD_HOME")
        root = Path(chosen).absolute()
        config = root / CONFIG_NAME
        if not config.is_file():
            raise HomeError(f"{root} is not a mailyard home (no {CONFIG_NAME}); "
                            f"create one with `mailyard init --home {root} --hostname FQDN`")
        try:
            data = tomllib.loads(config.read_text())
        except PermissionError:
            raise HomeError(f"{config}: permission denied; it holds the store's credentials, "
                            "so only root and the mail owner's group may read it") from None
        return cls(
            root=root,
            db_url=str(data.get("db_url") or f"sqlite:///{root / 'db' / 'store.sqlite'}"),
            port_base=int(data.get("port_base", 0)),
            node_name=str(data.get("node_name", "node1")),
        )

    def write_config(self) -> None:
        body = (
            "# mailyard node identity; settings live in the store (`mailyard settings list`).\n"
            f"db_url = {_toml_str(self.db_url)}\n"
            f"port_base = {int(self.port_base)}\n"
            f"node_name = {_toml_str(self.node_name)}\n"
        )
        tmp = self.root / (CONFIG_NAME + ".tmp")
        tmp.unlink(missing_ok=True)
        # It may hold the PostgreSQL password: never readable by other users, not even for
        # the moment before nodeinit.secure_home gives it its group.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, CONFIG_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, self.root / CONFIG_NAME)

    def make_dirs(self) -> None:
        if self.db_url.startswith("sqlite:///"):
            Path(self.db_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # HOME/mail, not mail.root: the store may not exist yet (nodeinit prepares the root).
        for path in (self.root, self.queue_dir, self.default_mail_dir, self.log_dir,
                     self.tls_dir, self.run_dir, self.etc_dir, self.var_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tls_dir, 0o700)

    # ---- places ------------------------------------------------------------------------------
    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def default_mail_dir(self) -> Path:
        return self.root / DEFAULT_MAIL_DIR

    @property
    def mail_dir(self) -> Path:
        """The mail root: setting mail.root, or HOME/mail while it is empty.

        Read from the store the first time and then kept, because delivery asks for it with
        every message. Code that has just loaded the settings hands them over with
        `use_settings` (the send service at start and on every reload, mailbox creation,
        applying a mail.root change), so a long-running process follows a change."""
        root = self._mail_root
        if root is None:
            root = self.use_settings(_stored_settings(self))
        return root

    def mail_root_in(self, settings: Mapping[str, Any]) -> Path:
        """The mail root that `settings` give this node (nothing is kept)."""
        chosen = str(settings.get("mail.root") or "")
        return Path(chosen) if chosen else self.default_mail_dir

    def use_settings(self, settings: Mapping[str, Any]) -> Path:
        """Keep the mail root of freshly loaded `settings`; returns it."""
        self._mail_root = self.mail_root_in(settings)
        return self._mail_root

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    @property
    def var_dir(self) -> Path:
        return self.root / "var"

    @property
    def cert_file(self) -> Path:
        return self.tls_dir / "cert.pem"

    @property
    def key_file(self) -> Path:
        return self.tls_dir / "key.pem"

    def service_log_dir(self, service: str) -> Path:
        return self.log_dir / service

    def maildir(self, address: str) -> Path:
        local, _, domain = address.lower().rpartition("@")
        return self.mail_dir / domain / local / "Maildir"

    # ---- ports --------------------------------------------------------------------------------
    def port(self, listener: str, settings: Mapping[str, Any] | None = None) -> int:
        """The port a listener uses on this node: its standard port (or setting) + port base."""
        standard = STANDARD_PORTS[listener]
        if listener in PORT_SETTINGS:
            key = PORT_SETTINGS[listener]
            if settings is None:
                settings = _stored_settings(self)
            standard = int(settings[key])
        return standard + self.port_base


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
