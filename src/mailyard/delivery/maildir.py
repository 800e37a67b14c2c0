"""Writing one message into a Maildir folder so that a crash never leaves a partial message.

The maildir(5) protocol: write into tmp/ under a unique name, fsync, rename into new/, fsync
new/. A reader (Dovecot) only looks at new/ and cur/, so it sees the whole message or none.
Deliveries into the same new/ at once share its fsync (groupsync.py); each returns only after
an fsync that began after its own rename, so its done mark is written after the message is
durable, never before.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from .groupsync import GroupSync

_sequence = itertools.count()
# One for the process: deliveries into the same new/ at once share its fsync.
NEW_DIR_SYNC = GroupSync()


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
    tmp = folder / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = folder / "new" / name
    try:
        os.rename(tmp, final)
        NEW_DIR_SYNC.sync(folder / "new")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
