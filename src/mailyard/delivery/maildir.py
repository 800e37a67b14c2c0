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

from ..fssync import FS_SYNC, Steps, available, run_steps
from .groupsync import GroupSync

_sequence = itertools.count()
# One for the process: deliveries into the same new/ at once share its fsync.
NEW_DIR_SYNC = GroupSync()
# syncfs rounds instead of fsyncs where the system has them.
SYNC_ROUNDS = available()


def _host_part() -> str:
    # maildir(5): "/" and ":" in the host name are written as octal escapes.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


_HOST: tuple[float, str] = (0.0, "")  # when the host part was read, and what it was
# The host part is read again after this long (a renamed host shows in new names soon; the
# name is only there to make file names unique across hosts, maildir(5)).
HOST_PART_SECONDS = 60.0


def unique_name(size: int) -> str:
    """A Maildir file name: time.M<usec>P<pid>Q<seq>.host,S=<size> (Dovecot reads S=)."""
    global _HOST
    now = time.time()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    read_at, host = _HOST
    if now - read_at > HOST_PART_SECONDS or now < read_at:
        host = _host_part()
        _HOST = (now, host)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_sequence)}.{host},S={size}"




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


def deliver_many(items: list[tuple[Path, bytes]]) -> list[Path | OSError]:
    """`deliver_to_folder` for several messages at once, each answered on its own (its path
    in new/, or the error that stopped it). Where syncfs rounds exist the steps go together:
    every file written, one round per filesystem, every rename, one round begun after the
    last rename; so a batch costs two rounds, and each answer still comes only after a sync
    that began after its own rename."""
    return run_steps(deliver_many_steps(items))


def deliver_many_steps(items: list[tuple[Path, bytes]]) -> Steps[list[Path | OSError]]:
    """`deliver_many` as steps (fssync.Steps), which the send service drives on its event
    loop with its sync process making the rounds. Without syncfs rounds there are no steps:
    each message is delivered with its own fsyncs, in the calling thread."""
    if not SYNC_ROUNDS:
        out: list[Path | OSError] = []
        for folder, message in items:
            try:
                out.append(deliver_to_folder(folder, message))
            except OSError as err:
                out.append(err)
        return out
    answers: list[Path | OSError | None] = [None] * len(items)
    written: list[tuple[int, str, str]] = []  # index, tmp path, folder
    for i, (folder, message) in enumerate(items):
        base = os.fspath(folder)
        tmp = f"{base}/tmp/{unique_name(len(message))}"
        try:
            _write_new(tmp, message)
        except OSError as err:
            answers[i] = err
            continue
        written.append((i, tmp, base))
    try:
        yield [f"{base}/tmp" for _, _, base in written]
    except OSError as err:  # the data may not be on the disk: no name in new/ for any
        for i, tmp, _ in written:
            _unlink(tmp)
            answers[i] = err
        written = []
    renamed: list[tuple[int, str, str]] = []
    for i, tmp, base in written:
        final = f"{base}/new/{tmp.rpartition('/')[2]}"
        try:
            os.rename(tmp, final)
        except OSError as err:
            _unlink(tmp)
            answers[i] = err
            continue
        renamed.append((i, final, base))
    try:
        yield [f"{base}/new" for _, _, base in renamed]
    except OSError as err:  # in new/, perhaps not durably: defer (a duplicate, never a loss)
        for i, _, _ in renamed:
            answers[i] = err
        renamed = []
    for i, final, _ in renamed:
        answers[i] = Path(final)
    return [a if a is not None else OSError("not delivered") for a in answers]


def _write_new(path: str, message: bytes) -> None:
    """Create `path` (never an existing file) holding `message`; nothing left on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
