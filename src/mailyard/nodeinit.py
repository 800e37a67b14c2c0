"""Creating a node's home: directories, identity, store schema, TLS certificate, first admin."""

from __future__ import annotations

import secrets
from pathlib import Path

from .home import Home
from .services.tls import make_self_signed
from .store.accounts import (
    add_admin,
    add_domain,
    add_mailbox,
    count_admins,
    get_alias,
    get_mailbox,
    is_local_domain,
    split_address,
)
from .store.db import migrate
from .store.settings_store import load_settings, set_many


def give_store_to_mail_owner(home: Home) -> None:
    """An SQLite store lives in HOME/db/, owned by the mail owner: the SMTP and send services
    read it after dropping root, and SQLite needs to write its -wal/-shm files beside it.
    Root's own writes keep that ownership (SQLite gives new -wal/-shm files the store's owner)."""
    from .services.privileges import chown_tree

    if home.db_url.startswith("sqlite:///"):
        chown_tree(Path(home.db_url[len("sqlite:///"):]).parent)


def prepare_own_mail_root(home: Home) -> None:
    """A node joining a store whose mail.root names another directory (a shared one, usually)
    makes sure it can use it: created when missing, else checked, never chowned wholesale,
    since other nodes' mail is in it. A problem is printed, not fatal: init must finish, and
    the root may be a filesystem that is mounted later."""
    import sys

    from .mailboxes import MailRootError, prepare_mail_root

    root = home.mail_dir
    if root == home.default_mail_dir:
        return
    try:
        prepare_mail_root(root)
    except MailRootError as exc:
        print(f"warning: mail.root: {exc}", file=sys.stderr)


def init_home(root: Path, hostname: str, port_base: int = 0, db_url: str | None = None,
              node_name: str = "node1") -> tuple[Home, str | None]:
    """Create (or complete) a home. Returns it and the first admin's password when one was
    made now (shown once, never stored in clear)."""
    from .settings.registry import setting

    hostname = setting("server.hostname").parse(hostname)
    root = Path(root).absolute()
    home = Home(root=root, db_url=db_url or f"sqlite:///{root / 'db' / 'store.sqlite'}",
                port_base=port_base, node_name=node_name)
    home.make_dirs()
    home.write_config()
    migrate(home.db_url)
    from .store.db import session_scope
    from .store.models import SettingRow

    with session_scope(home.db_url) as s:
        stored = s.get(SettingRow, {"key": "server.hostname", "node": ""})
        cluster_hostname = stored.value if stored is not None else None
    if cluster_hostname is None:
        set_many(home, {"server.hostname": hostname, "server.default_domain": hostname})
    elif cluster_hostname != hostname:
        # Another node made this (shared) store: the hostname names this node alone.
        from .store.settings_store import set_setting

        set_setting(home, "server.hostname", hostname, node_only=True)
    if not home.cert_file.exists() or not home.key_file.exists():
        make_self_signed(home.cert_file, home.key_file, hostname)
    from .services.privileges import chown_tree, ensure_mail_user

    ensure_mail_user()
    for owned in (home.queue_dir, home.default_mail_dir, home.log_dir):
        chown_tree(owned)
    prepare_own_mail_root(home)
    give_store_to_mail_owner(home)
    password = None
    if count_admins(home) == 0:
        password = secrets.token_urlsafe(15)
        add_admin(home, "admin", password)
    from .store.cache import refresh_cache

    refresh_cache(home)  # a node on a shared store has its local copy from the start
    return home, password


def setup_postmaster(home: Home, address: str | None = None) -> tuple[str, bool]:
    """Give postmaster mail (RFC 5321 4.5.1) and double bounces a real mailbox of this node.

    `address` is the administrator's choice (`mailyard init --postmaster`); without one, a home
    that has none yet gets postmaster@<hostname>. Its domain becomes a local domain and the
    mailbox is created if neither it nor an alias of that name exists (with a random password
    nobody knows: set one with `mailyard mailbox passwd`). Settings server.postmaster and the
    double bounce address then name it. Returns the address and whether a mailbox was made."""
    from .settings.registry import setting

    settings = load_settings(home)
    if address is None and settings["server.postmaster"]:
        return str(settings["server.postmaster"]), False  # set up before: keep it
    target = setting("server.postmaster").parse(
        address or f"postmaster@{settings['server.hostname']}")
    local, domain = split_address(target)
    target = f"{local}@{domain}"
    if not is_local_domain(home, domain):
        add_domain(home, domain)
    made = False
    if get_mailbox(home, target) is None and get_alias(home, target) is None:
        add_mailbox(home, target, secrets.token_urlsafe(24))
        made = True
    set_many(home, {"server.postmaster": target, "bounce.double_to": local,
                    "bounce.double_host": domain})
    return target, made
