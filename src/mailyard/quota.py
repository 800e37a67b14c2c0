"""Mailbox usage, kept the Maildir++ way: the `maildirsize` file at the top of a Maildir.

One accounting for every writer: our local delivery appends a line for each message it
stores, and Dovecot's maildir quota backend (`quota = maildir`) reads the same file and
appends its own lines for IMAP APPEND, COPY and expunges, so SMTP, delivery and IMAP agree on
how full a mailbox is. The format (Maildir++, as Courier and Dovecot write it): a first line
with the limit (`<bytes>S`), then lines of `<bytes> <messages>` whose sums are the usage;
negative lines for removals. We chose it over delivering through Dovecot's LMTP because our
delivery already writes the Maildir itself (spam folder choice, group fsync), and one file
that both append to needs no second protocol on the path of every message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MAILDIRSIZE = "maildirsize"
# A maildirsize longer than this is summed anyway but rewritten from the Maildir at the next
# recount: Maildir++ asks writers to recalculate once the file passes 5120 bytes.
RECOUNT_BYTES = 5120
_LINE = re.compile(rb"^\s*(-?\d+)\s+(-?\d+)\s*$")
_SIZE_IN_NAME = re.compile(r",S=(\d+)")
MB = 1024 * 1024
# The most of a maildirsize that is read: writers recount a file past RECOUNT_BYTES, so a
# longer one is damaged or never recounted; its first megabyte is summed.
MAX_READ = 1 << 20


def usage(maildir: Path) -> int | None:
    """Bytes in use per `maildir`/maildirsize; None when there is no such file (yet)."""
    try:
        with open(maildir / MAILDIRSIZE, "rb") as f:
            data = f.read(MAX_READ)
    except FileNotFoundError:
        return None
    return parse(data)


def parse(data: bytes) -> int:
    """The bytes in use that a maildirsize's lines add up to (its first line is the limit)."""
    total = 0
    for line in data.splitlines()[1:]:
        m = _LINE.match(line)
        if m:
            total += int(m.group(1))
    return max(total, 0)


def size_in_name(name: str) -> int | None:
    """The size a Maildir file name carries (",S=<bytes>", as Dovecot and we write it)."""
    m = _SIZE_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def count(maildir: Path) -> tuple[int, int]:
    """(bytes, messages) of every message in the Maildir and its folders, from the ,S= of
    the file names where Dovecot and we write it, else the file's size."""
    size = messages = 0
    folders = [maildir] + [p for p in maildir.glob(".*") if p.is_dir()]
    for folder in folders:
        for sub in ("cur", "new"):
            try:
                entries = list(os.scandir(folder / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                m = _SIZE_IN_NAME.search(entry.name)
                size += int(m.group(1)) if m else entry.stat(follow_symlinks=False).st_size
                messages += 1
    return size, messages


def write_new(maildir: Path, limit_mb: int) -> int:
    """Recount the Maildir into a fresh maildirsize (atomically); the bytes in use."""
    size, messages = count(maildir)
    tmp = maildir / f".{MAILDIRSIZE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(f"{limit_mb * MB}S\n{size} {messages}\n".encode())
        if os.geteuid() == 0:  # the mailbox's owner (Dovecot appends to it as that user)
            owner = os.stat(maildir)
            os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
    os.replace(tmp, maildir / MAILDIRSIZE)
    return size


def current(maildir: Path, limit_mb: int) -> int:
    """Bytes in use, recounting when the file is missing or has grown past RECOUNT_BYTES."""
    path = maildir / MAILDIRSIZE
    try:
        if path.stat().st_size <= RECOUNT_BYTES:
            found = usage(maildir)
            if found is not None:
                return found
    except FileNotFoundError:
        pass
    return write_new(maildir, limit_mb)


def add(maildir: Path, size: int, messages: int = 1) -> None:
    """Record a message stored (one appended line: O_APPEND keeps lines of concurrent writers
    whole). Without a maildirsize yet, nothing: the next `current` recounts."""
    try:
        fd = os.open(maildir / MAILDIRSIZE, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.write(fd, f"{size} {messages}\n".encode())
    finally:
        os.close(fd)


def over(limit_mb: int, used: int, incoming: int = 0) -> bool:
    """True when `incoming` more bytes do not fit (a limit of 0 is no limit)."""
    return limit_mb > 0 and used + incoming > limit_mb * MB
