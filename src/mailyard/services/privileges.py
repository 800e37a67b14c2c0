"""Who owns the queue and the mail, and dropping root after binding ports.

Started as root (a real server), the node's own network services bind their ports and then run
as the unprivileged system user `mailyard`, which owns queue/, mail/ and log/; Dovecot's mail
processes use the same uid. Started as an ordinary user, everything runs as that user.
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


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_mail_user() -> None:
    """Create the system user `mailyard` if we are root and it is missing."""
    if not running_as_root():
        return
    try:
        pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER],
                       check=True, capture_output=True)


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


def drop_privileges() -> None:
    """Become the mail owner for good (call after binding privileged ports)."""
    if not running_as_root():
        return
    preload_before_drop()
    uid, gid = mail_owner()
    os.setgroups([g.gr_gid for g in grp.getgrall() if MAIL_USER in g.gr_mem] or [gid])
    os.setgid(gid)
    os.setuid(uid)
