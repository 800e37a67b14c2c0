"""Who owns the queue and the mail, and dropping root after binding ports.

Started as root (a real server), the node's own network services bind their ports and then run
as the unprivileged system user `mailyard`, which owns queue/, mail/ and log/; Dovecot's mail
processes use the same uid. The panel runs as `mailyard-panel`; both are in the group
`mailyard-store`, which may open the store. Started as an ordinary user, everything runs as
that user.
"""

from __future__ import annotations

import grp
import importlib
import os
import pwd
import subprocess
from pathlib import Path

from .. import safefs

MAIL_USER = "mailyard"
# The panel's own user (issue 16, item 9): the web panel reads the network, so it never keeps
# root; what it cannot do itself it asks of the root helper (services/helper.py).
PANEL_USER = "mailyard-panel"
# The group that may open the store (db/ and mailyard.toml): the mail owner and the panel.
STORE_GROUP = "mailyard-store"


def running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)


def ensure_mail_user() -> None:
    """Create the system users `mailyard` and `mailyard-panel` and the group `mailyard-store`
    holding both, if we are root and they are missing."""
    global _users_made
    if not running_as_root() or _users_made:
        return
    _ensure_user(MAIL_USER)
    _ensure_user(PANEL_USER)
    try:
        members = grp.getgrnam(STORE_GROUP).gr_mem
    except KeyError:
        subprocess.run(["groupadd", "--system", STORE_GROUP], check=True, capture_output=True)
        members = []
    for user in (MAIL_USER, PANEL_USER):
        if user not in members:
            subprocess.run(["usermod", "--append", "--groups", STORE_GROUP, user],
                           check=True, capture_output=True)
    _users_made = True


_users_made = False  # checked once per process: mail_owner() is on the queue's hot path


def store_gid() -> int:
    """The group that opens the store: `mailyard-store` as root, else our own group."""
    if running_as_root():
        ensure_mail_user()
        return grp.getgrnam(STORE_GROUP).gr_gid
    return os.getgid()


def panel_owner() -> tuple[int, int]:
    """(uid, gid) the panel runs as: `mailyard-panel` as root, else ourselves."""
    if running_as_root():
        ensure_mail_user()
        entry = pwd.getpwnam(PANEL_USER)
        return entry.pw_uid, entry.pw_gid
    return os.getuid(), os.getgid()


def mail_owner() -> tuple[int, int]:
    """(uid, gid) that owns the queue and mailboxes: `mailyard` as root, else ourselves."""
    if running_as_root():
        ensure_mail_user()
        entry = pwd.getpwnam(MAIL_USER)
        return entry.pw_uid, entry.pw_gid
    return os.getuid(), os.getgid()


def chown_tree(path: Path) -> None:
    """Give `path` and everything below it to the mail owner (only meaningful as root).

    Walked by descriptors from `path`'s parent (safefs): the tree is the mail owner's, and
    a link it planted there is never followed, so root gives away nothing outside it."""
    if not running_as_root() or not path.exists():
        return
    uid, gid = mail_owner()
    path = Path(path).absolute()
    safefs.chown_tree(path.parent, path.name, uid, gid)


def chown_path(path: Path) -> None:
    if running_as_root():
        uid, gid = mail_owner()
        os.lchown(path, uid, gid)


# Modules that mailyard and its libraries import lazily, loaded before root is dropped: after
# the drop, the interpreter's files and our own may be out of the mail owner's reach (a Python
# under root's 0700 home, a checkout in a 0700 directory). One list for every process that
# drops, so that a lazy import added to a shared path is covered once, here. Our own modules
# are imported at the top of the modules that use them, so only the one optional part that
# local delivery loads when present is named (tests/foundation/test_dropped_imports.py).
PRELOAD_BEFORE_DROP = (
    "sqlite3", "ssl", "email.utils", "email.charset", "encodings.idna", "json",
    "concurrent.futures.thread", "sqlalchemy.dialects.sqlite.pysqlite",
    "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "dns.rdtypes.ANY.MX", "dns.rdtypes.ANY.CNAME",
    "dns.rdtypes.ANY.SOA", "dns.rdtypes.ANY.TXT", "dns.rdtypes.ANY.PTR", "dns.rdtypes.ANY.NS",
    "dns.edns", "dns.flags", "dns.asyncquery", "dns._asyncio_backend",
    "mailyard.filters.mailbox", "aiospamc",
)


def preload_before_drop() -> None:
    for name in PRELOAD_BEFORE_DROP:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # an optional part (the filters) or a module this version lacks


def drop_privileges(user: str = MAIL_USER) -> None:
    """Become `user` (the mail owner unless named) for good, with its groups (call after
    binding privileged ports)."""
    if not running_as_root():
        return
    preload_before_drop()
    ensure_mail_user()
    entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem] or [gid])
    os.setgid(gid)
    os.setuid(uid)
