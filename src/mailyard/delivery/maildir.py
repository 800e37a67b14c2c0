"""Writing one message into a Maildir folder so that a crash never leaves a partial message.

The maildir(5) protocol: write into tmp/ under a unique name, fsync, rename into new/, fsync
new/. A reader (Dovecot) only looks at new/ and cur/, so it sees the whole message or none.
Where syncfs(2) exists (Linux), the file's fsync and new/'s fsync are each a syncfs round of
the Maildir's filesystem shared with every delivery and queue change at that moment
(fssync.py): data durable, then the rename, then a round that began after the rename.
Elsewhere deliveries into the same new/ at once share its fsync (groupsync.py). Either way a
delivery returns only after a sync that began after its own rename, so its done mark is
written after the message is durable, never before.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from ..fssync import FS_SYNC, available
from .groupsync import GroupSync

_sequence = itertools.count()
# One for the process: deliveries into the same new/ at once share its fsync.
NEW_DIR_SYNC = GroupSync()
# syncfs rounds instead of fsyncs where the system has them.
SYNC_ROUNDS = available()


def _host_part() -> str:
    # maildir(5): "/" and ":" in the host name are written as octal escapes.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def unique_name(size: int) -> str:
    """A Maildir file name: time.M<usec>P<pid>Q<seq>.host,S=<size> (Dovecot reads S=)."""
    now = time.time()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_sequence)}.{_host_part()},S={size}"




def deliver_to_folder(folder: Path, message: bytes) -> Path:
    """Put `message` into `folder`/new durably; returns its path. OSError on failure."""
    name = unique_name(len(message))
    base = os.fspath(folder)
    tmp = f"{base}/tmp/{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view):]
        if not SYNC_ROUNDS:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    final = f"{base}/new/{name}"
    try:
        if SYNC_ROUNDS:
            FS_SYNC.sync(f"{base}/tmp")  # the data, before any name in new/ points at it
        os.rename(tmp, final)
        if SYNC_ROUNDS:
            FS_SYNC.sync(f"{base}/new")
        else:
            NEW_DIR_SYNC.sync(folder / "new")
    except BaseException:
        _unlink(tmp)
        raise
    return Path(final)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
