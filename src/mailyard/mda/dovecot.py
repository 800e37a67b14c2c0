"""The node's Dovecot: render its configuration, start it, report it, switch its listeners.

Entry points named in services/catalog.py:

- `exec_argv(home)`: render the configuration and return the argv the supervised child execs:
  `[/usr/sbin/dovecot, -F, -c, HOME/etc/dovecot/dovecot.conf]` (foreground, private config).
- `version()`: what `dovecot --version` prints, after the word "Dovecot".
- `control(home, service, action)`: start, stop, restart, reload or status of one of the four
  services pop3, pop3s, imap, imaps, which share the Dovecot master (see `control`).
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..services.errors import ControlError
from ..services.privileges import mail_owner, running_as_root
from ..store.cache import cache_path, uses_cache
from ..store.settings_store import load_settings
from . import listeners, master
from .config import (
    DovecotConfigError,
    Identity,
    conf_path,
    paths,
    render_text,
)
from .sqlconf import StoreUrlError, render_sql_conf

if TYPE_CHECKING:
    from ..home import Home

# The users Debian's dovecot-core package creates; Dovecot drops to them when started as root.
DOVECOT_USER = "dovecot"
DOVECOT_LOGIN_USER = "dovenull"

ACTIONS = ("start", "stop", "restart", "reload", "status")
RUNNING, STOPPED = "RUNNING", "STOPPED"

# doveconf checks a freshly rendered configuration in a few tens of milliseconds.
DOVECONF_TIMEOUT_SECONDS = 30.0


class DovecotError(ControlError):
    """Dovecot could not be configured or controlled; the message says what and why."""


# ---- rendering ------------------------------------------------------------------------------


def identity() -> Identity:
    """Root: Dovecot's own users for its processes, mailyard's mail owner for the mail.
    Not root: everything as ourselves (Dovecot cannot change users then)."""
    uid, gid = mail_owner()
    if running_as_root():
        try:
            group = grp.getgrgid(pwd.getpwnam(DOVECOT_USER).pw_gid).gr_name
            pwd.getpwnam(DOVECOT_LOGIN_USER)
        except KeyError:
            raise DovecotError(f"the system users {DOVECOT_USER} and {DOVECOT_LOGIN_USER} are "
                               "missing; they come with the package dovecot-core") from None
        return Identity(True, DOVECOT_USER, group, DOVECOT_LOGIN_USER, uid, gid)
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    return Identity(False, me, group, me, uid, gid)


def ipv6_available() -> bool:
    """Whether this machine can listen on IPv6 (containers often have it switched off)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
    except OSError:
        return False
    return True


def _write_atomically(path: Path, text: str, mode: int) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    return tmp


def _check_with_doveconf(conf_tmp: Path) -> None:
    try:
        done = subprocess.run([master.program("doveconf"), "-c", str(conf_tmp), "-n"],
                              capture_output=True, text=True, timeout=DOVECONF_TIMEOUT_SECONDS)
    except master.DovecotMissing as exc:
        raise DovecotError(str(exc)) from None
    if done.returncode != 0:
        conf_tmp.unlink(missing_ok=True)
        raise DovecotError("Dovecot refused the configuration mailyard rendered: "
                           f"{done.stderr.strip()}")


# Ports below this need root to listen on (Linux without CAP_NET_BIND_SERVICE).
PRIVILEGED_PORT_LIMIT = 1024


def _check_prerequisites(home: Home, settings: dict[str, Any], ident: Identity) -> None:
    """Refuse, with the reason, what would only make Dovecot fail at start."""
    for path, what in ((home.cert_file, "TLS certificate"), (home.key_file, "TLS key")):
        if not path.is_file():
            raise DovecotError(f"the node's {what} {path} is missing; `mailyard init` makes a "
                               "self-signed one, or put the real one there")
    if not ident.root:
        low = [f"{name} {home.port(name, settings)}" for name, on
               in listeners.enabled(home, settings).items()
               if on and home.port(name, settings) < PRIVILEGED_PORT_LIMIT]
        if low:
            raise DovecotError(f"ports below {PRIVILEGED_PORT_LIMIT} need root, and mailyard "
                               f"is not running as root: {', '.join(low)}; give the node a "
                               "port base (mailyard init --port-base) or start it as root")


def render(home: Home, settings: dict[str, Any] | None = None,
           ident: Identity | None = None) -> Path:
    """Write HOME/etc/dovecot/dovecot.conf and dovecot-sql.conf.ext from the store.

    Each file is replaced atomically, the main one only after `doveconf` accepted it, so a
    running Dovecot never reloads a half-written or refused configuration. `ident` defaults to
    who we are (see `identity`)."""
    if settings is None:
        settings = load_settings(home)
    p = paths(home)
    ident = ident or identity()
    _check_prerequisites(home, settings, ident)
    try:
        text = render_text(home, settings, listeners.enabled(home, settings), ident,
                           ipv6_available())
        sql_text = render_sql_conf(home.db_url)
        cache_text = (render_sql_conf(f"sqlite:///{cache_path(home)}") if uses_cache(home)
                      else None)
    except (DovecotConfigError, StoreUrlError) as exc:
        raise DovecotError(str(exc)) from None
    for directory in (p.sql_conf.parent, p.state_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # The SQL file may hold the PostgreSQL password: readable by root (Dovecot's auth reads it
    # before dropping privileges) or, unprivileged, by ourselves only.
    os.replace(_write_atomically(p.sql_conf, sql_text, 0o600), p.sql_conf)
    if cache_text is not None:
        os.replace(_write_atomically(p.cache_sql_conf, cache_text, 0o600), p.cache_sql_conf)
    conf = conf_path(home)
    tmp = _write_atomically(conf, text, 0o644)
    _check_with_doveconf(tmp)
    os.replace(tmp, conf)
    return conf


def exec_argv(home: Home) -> list[str]:
    """Render, then the argv that runs this node's Dovecot in the foreground."""
    base_dir = paths(home).base_dir
    running = master.master_pid(base_dir)
    if running is not None:
        raise DovecotError(f"Dovecot already runs for this node (pid {running}, "
                           f"{master.pid_file(base_dir)}); stop it first")
    master.remove_stale_pid_file(base_dir)
    conf = render(home)
    try:
        binary = master.program("dovecot")
    except master.DovecotMissing as exc:
        raise DovecotError(str(exc)) from None
    return [binary, "-F", "-c", str(conf)]


def version() -> str:
    """Dovecot's version as it reports it, e.g. "Dovecot 2.3.19.1 (9b53102964)"."""
    done = subprocess.run([master.program("dovecot"), "--version"], capture_output=True,
                          text=True, timeout=DOVECONF_TIMEOUT_SECONDS, check=True)
    return "Dovecot " + done.stdout.strip()


def reset_listeners(home: Home) -> None:
    """Forget which listeners were switched on or off, so start-on-boot decides again.
    For a fresh start of the node; a restart of Dovecot alone keeps the switches."""
    listeners.forget(home)


# ---- control ---------------------------------------------------------------------------------


def master_running(home: Home) -> bool:
    return master.master_pid(paths(home).base_dir) is not None


def _listener_status(home: Home, service: str) -> str:
    on = listeners.enabled(home, load_settings(home))[service]
    return RUNNING if on and master_running(home) else STOPPED


def _reload(home: Home, settings: dict[str, Any]) -> None:
    """Render and make the running master load it; return once no process of the old
    configuration accepts new clients (vsz_limit applies to processes started from then on)."""
    conf = render(home, settings)
    try:
        done = master.reload(conf, paths(home).base_dir)
    except (RuntimeError, master.DovecotMissing) as exc:
        raise DovecotError(str(exc)) from None
    if not done and master_running(home):
        raise DovecotError("Dovecot did not take the new configuration within "
                           f"{master.LISTENER_WAIT_SECONDS:.0f} s; see its log")


def _wait_listener(home: Home, service: str, settings: dict[str, Any], on: bool) -> None:
    port = home.port(service, settings)
    if not master.wait_until(lambda: master.listening(port) == on):
        verb = "open" if on else "close"
        raise DovecotError(f"Dovecot did not {verb} the {service} listener on port {port} "
                           f"within {master.LISTENER_WAIT_SECONDS:.0f} s; see its log"
                           + (" (is another program using the port?)" if on else ""))


def _switch(home: Home, service: str, on: bool) -> None:
    listeners.set_enabled(home, service, on)
    settings = load_settings(home)
    if not master_running(home):
        render(home, settings)  # takes effect when the supervisor starts Dovecot
        return
    _reload(home, settings)
    _wait_listener(home, service, settings, on)
    if not on:
        pid = master.master_pid(paths(home).base_dir)
        if pid is not None:
            master.kick(pid, home.port(service, settings))


def control(home: Home, service: str, action: str) -> str:
    """Act on one of the four Dovecot services; returns its state afterwards.

    The result is "RUNNING" when the service's listener is switched on and the Dovecot master
    runs, else "STOPPED". How the master is known to run: see mda/master.py (its pid file).

    - start: switch the listener on; with the master running, re-render, `doveadm reload` and
      wait until the port listens. With the master stopped, only the switch is recorded: the
      supervisor starts Dovecot (exec_argv), which renders with the listener on.
    - stop: switch the listener off; with the master running, re-render, reload, wait until the
      port is closed and end the clients still connected to it. The others keep serving.
    - restart: stop then start (its clients are disconnected, the others are untouched).
    - reload: re-render from the current settings and reload; clients stay connected.
    - status: report only.
    """
    try:
        listeners.check_name(service)
    except listeners.ListenerError as exc:
        raise DovecotError(str(exc)) from None
    if action not in ACTIONS:
        raise DovecotError(f"unknown action {action!r} for {service}; actions are "
                           f"{', '.join(ACTIONS)}")
    if action == "status":
        return _listener_status(home, service)
    with listeners.locked(home):
        if action == "start":
            _switch(home, service, True)
        elif action == "stop":
            _switch(home, service, False)
        elif action == "restart":
            if master_running(home):
                _switch(home, service, False)
            _switch(home, service, True)
        elif master_running(home):  # reload
            _reload(home, load_settings(home))
    return _listener_status(home, service)
