"""Listing a node home's files with mode and owner, and finding secrets other users can read.

Used by the fresh-home test here and by the running-node test in tests/integration.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from mailyard.services.privileges import MAIL_USER, PANEL_USER, STORE_GROUP

# What holds a secret: the store URL (a PostgreSQL password), password hashes and sessions,
# the TLS key, Dovecot's SQL settings, and logs (senders, recipients, client addresses).
SECRET_PREFIXES = ("db/", "tls/key.pem", "log/")
SECRET_NAMES = ("mailyard.toml", "etc/cluster/manager-token")
SECRET_SUFFIXES = ("-sql.conf.ext", ".sql.conf", "sql.conf.ext")
# Groups a secret may be readable by: the mail owner's (the services after dropping root),
# and the store's group (the mail owner and the panel) for mailyard.toml and the store.
ALLOWED_GROUPS = {MAIL_USER, "clamav", "root"}
STORE_SECRETS = ("db/", "mailyard.toml")
# The one place a secret may be writable by its group: the store's files, by the store's group
# (SQLite's readers write its -shm file; the panel, as mailyard-panel, writes its sessions).
GROUP_WRITABLE = ("db/",)
# The manager's node token: read by the panel (its group), which sends it to the other nodes.
PANEL_SECRETS = ("etc/cluster/manager-token",)


@dataclass(frozen=True)
class Entry:
    rel: str
    mode: int
    owner: str
    group: str
    is_dir: bool

    def __str__(self) -> str:
        return f"{stat.filemode(self.mode)} {self.owner}:{self.group} {self.rel}"


def _name(table, ident: int) -> str:  # type: ignore[no-untyped-def]
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)


def listing(root: Path) -> list[Entry]:
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                continue
            entries.append(Entry(str(path.relative_to(root)), st.st_mode,
                                 _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid),
                                 stat.S_ISDIR(st.st_mode)))
    return entries


def is_secret(entry: Entry) -> bool:
    if entry.is_dir:
        return False
    rel = entry.rel
    return (rel in SECRET_NAMES or rel.startswith(SECRET_PREFIXES)
            or rel.endswith(SECRET_SUFFIXES))


def exposed(root: Path) -> list[str]:
    """Every secret another local user could read, and anything anyone could write."""
    problems = []
    for entry in listing(root):
        if entry.mode & stat.S_IWOTH and not (entry.is_dir and entry.mode & stat.S_ISVTX):
            problems.append(f"world-writable: {entry}")
        if not is_secret(entry):
            continue
        if entry.mode & stat.S_IROTH:
            problems.append(f"world-readable secret: {entry}")
        store_file = entry.group == STORE_GROUP and entry.rel.startswith(STORE_SECRETS)
        panel_file = entry.group == PANEL_USER and entry.rel in PANEL_SECRETS
        if (entry.mode & stat.S_IRGRP and entry.group not in ALLOWED_GROUPS
                and not (store_file or panel_file)):
            problems.append(f"secret readable by group {entry.group}: {entry}")
        if entry.mode & stat.S_IWGRP and not (store_file and entry.rel.startswith(GROUP_WRITABLE)):
            problems.append(f"secret writable by its group: {entry}")
    return problems
