"""Who owns the queue and the mail, and dropping root after binding ports.

Started as root (a real server), the node's own network services bind their ports and then run
as the unprivileged system user `mailyard`, which owns queue/, mail/ and log/; Dovecot's mail
processes use the same uid. Started as an ordinary user, everything runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

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
    """Give `path` and everything below it to the mail owner (only meaningful as root)."""
    if not running_as_root() or not path.exists():
        return
    uid, gid = mail_owner()
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def chown_path(path: Path) -> None:
    if running_as_root():
        uid, gid = mail_owner()
        os.lchown(path, uid, gid)


def drop_privileges() -> None:
    """Become the mail owner for good (call after binding privileged ports)."""
    if not running_as_root():
        return
    uid, gid = mail_owner()
    os.setgroups([g.gr_gid for g in grp.getgrall() if MAIL_USER in g.gr_mem] or [gid])
    os.setgid(gid)
    os.setuid(uid)
