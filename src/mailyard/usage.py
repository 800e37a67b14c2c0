"""How full each mailbox is: bytes used, its quota and the percentage, per mailbox and per domain.

The one service-layer answer that the CLI (`mailyard mailbox list`, `mailbox usage`), the
panel's Accounts page and the JSON API show. The bytes come from the Maildir++ `maildirsize`
that delivery and Dovecot both keep (mailyard.quota); a mailbox without one (no quota, so
nobody keeps the file) is counted from its message files instead.

Only reading, never writing: the panel and the CLI may run as root, and the Maildir belongs to
the mail owner, so every component below the mail root's parent is opened without following
links (mailyard.safefs), and a file that is a link or not a regular file counts as unreadable.
Recounting into a fresh maildirsize stays the job of delivery and SMTP (as the mail owner).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import quota, safefs
from .store import accounts
from .store.settings_store import load_settings

if TYPE_CHECKING:
    from .home import Home

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class MailboxUsage:
    """One mailbox's use of its quota. `used_bytes` is None when the Maildir cannot be read
    (not made yet, or a link in the way); `percent` is None without a quota or a count."""

    address: str
    quota_mb: int
    used_bytes: int | None
    percent: float | None
    source: str  # "maildirsize", "count" (no maildirsize: the files counted) or "none"


@dataclass(frozen=True)
class DomainUsage:
    """Totals of a domain's mailboxes; `quota_mb` sums the quotas of those that have one."""

    name: str
    mailboxes: int
    used_bytes: int
    quota_mb: int
    unlimited: int  # how many of its mailboxes have no quota


def percent_of(quota_mb: int, used_bytes: int | None) -> float | None:
    """`used_bytes` as a percentage of a quota of `quota_mb` MB (one decimal); None for no
    quota (0) or no count."""
    if not quota_mb or used_bytes is None:
        return None
    return round(used_bytes * 100 / (quota_mb * quota.MB), 1)


def _read_maildirsize(maildir_fd: int) -> int | None:
    try:
        fd = os.open(quota.MAILDIRSIZE, _FILE_FLAGS, dir_fd=maildir_fd)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a link planted in its place, not followed
        raise safefs.UnsafePath("maildirsize is a symbolic link; not followed") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise safefs.UnsafePath("maildirsize is not a regular file")
        data = os.read(fd, quota.MAX_READ)
    finally:
        os.close(fd)
    return quota.parse(data)


def _scan(parent_fd: int, name: str, messages: bool) -> tuple[list[str], int]:
    """In directory `name` below `parent_fd` (never through a link): the names of the
    sub-directories starting with "." (the Maildir++ folders), and with `messages` the bytes
    of its message files (",S=" in the name where the writer put it, else the file's size).
    Nothing for a directory that is missing or cannot be read."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return [], 0
    folders: list[str] = []
    total = 0
    try:
        with os.scandir(fd) as entries:  # scans a duplicate; fd stays ours to close
            for entry in entries:
                if not messages:
                    if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        folders.append(entry.name)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                size = quota.size_in_name(entry.name)
                total += size if size is not None else entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    finally:
        os.close(fd)
    return folders, total


def _count_files(maildir_fd: int) -> int:
    """Bytes of every message in the Maildir and its folders, as quota.count adds them."""
    folders, _ = _scan(maildir_fd, ".", messages=False)
    total = 0
    for folder in [".", *folders]:
        try:
            folder_fd = os.open(folder, _DIR_FLAGS, dir_fd=maildir_fd)
        except OSError:
            continue
        try:
            total += sum(_scan(folder_fd, sub, messages=True)[1] for sub in ("cur", "new"))
        finally:
            os.close(folder_fd)
    return total


def maildir_bytes(home: Home, address: str) -> tuple[int | None, str]:
    """(bytes the mailbox uses, where the figure comes from) — see MailboxUsage."""
    maildir = home.maildir(address)
    base = home.mail_dir.parent
    try:
        with safefs.directory(base, safefs.relative_to(base, maildir)) as fd:
            found = _read_maildirsize(fd)
            if found is not None:
                return found, "maildirsize"
            return _count_files(fd), "count"
    except (OSError, ValueError):  # missing, a link in the way, outside the mail root
        return None, "none"


def _fresh(home: Home) -> Home:
    """The home with the mail root the settings name now (a long-running panel follows a
    change of mail.root, as mailbox creation does)."""
    home.use_settings(load_settings(home))
    return home


def of_mailbox(home: Home, box: accounts.MailboxInfo) -> MailboxUsage:
    used, source = maildir_bytes(home, box.address)
    return MailboxUsage(box.address, box.quota_mb, used, percent_of(box.quota_mb, used), source)


def mailboxes(home: Home, domain: str | None = None) -> list[MailboxUsage]:
    """The usage of every mailbox (of one domain), in address order."""
    node = _fresh(home)
    return [of_mailbox(node, box) for box in accounts.list_mailboxes(node, domain)]


def mailbox(home: Home, address: str) -> MailboxUsage | None:
    """The usage of one mailbox, None when there is no such mailbox."""
    box = accounts.get_mailbox(home, address)
    return None if box is None else of_mailbox(_fresh(home), box)


def domains(home: Home, uses: list[MailboxUsage] | None = None) -> list[DomainUsage]:
    """Per domain: its mailboxes' bytes and quotas added up (domains without mailboxes too);
    `uses` when the caller has just read every mailbox's usage already."""
    totals = {str(d["name"]): [0, 0, 0, 0] for d in accounts.list_domains(home)}
    for use in mailboxes(home) if uses is None else uses:
        row = totals.setdefault(use.address.rpartition("@")[2], [0, 0, 0, 0])
        row[0] += 1
        row[1] += use.used_bytes or 0
        row[2] += use.quota_mb
        row[3] += 0 if use.quota_mb else 1
    return [DomainUsage(name, *row) for name, row in sorted(totals.items())]


def human_bytes(size: int | None) -> str:
    """A size for people: bytes, KB, MB or GB (binary units, as the quotas are given)."""
    if size is None:
        return "-"
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
