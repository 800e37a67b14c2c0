"""The states of a committed message on disk: splitting, done marks, bounce reports, removal.

Only the send service changes these files while it runs (docs/queue.md, "Invariants");
administration hands its changes to the service, or works alone with the service's lock held.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import fsync_dir
from ..fssync import FS_SYNC, Steps, available, run_steps
from .envelope import Envelope
from .errors import QueueError, TornMessage
from .layout import Queue

CHANNELS: tuple[str, ...] = ("local", "remote")
TODO_MARK = b"T"
DONE_MARK = b"D"
# A file in tmp/ older than this belongs to a writer that died: qmail-clean's 36 hours, which
# no SMTP session (timeout 1200 s per command) or sendmail run outlives.
TMP_ORPHAN_SECONDS = 36 * 3600
# mess/N with neither todo/N nor info/N: an inject that died between its two renames (they
# are milliseconds apart) or a removal that died half-way. An hour leaves room for a stalled
# disk under a live injector.
MESS_ORPHAN_SECONDS = 3600
# Threads that fsync the files of a split batch together (see _sync_all).
SYNC_THREADS = 16
_SYNC_POOL: ThreadPoolExecutor | None = None
# Blocks in which `check_data` reads a message to check it against its envelope.
CHECK_BLOCK = 256 * 1024
# Splits and done marks are made durable by shared syncfs rounds (fssync.py) where the system
# has them, else by an fsync of each file and directory.
SYNC_ROUNDS = available()


@dataclass
class Recipient:
    address: str
    done: bool
    offset: int  # byte offset of this recipient's T/D mark in its channel file


@dataclass
class BounceReport:
    """Why one recipient failed for good, kept in bounce/N until the bounce is sent."""

    recipient: str
    text: str  # the delivery report, lines separated by "\n"
    status: str = "5.0.0"  # RFC 3463 enhanced status code
    remote_mta: str = ""
    diagnostic: str = ""  # the remote server's reply, for Diagnostic-Code
    time: float = field(default_factory=time.time)


@dataclass
class StoredMessage:
    """A split message as found on disk (info/N, local/N, remote/N, bounce/N)."""

    qid: str
    envelope: Envelope
    recipients: dict[str, list[Recipient]]
    bounce_pending: bool


# ---- writing small files durably -----------------------------------------------------------------

def _write_file(path: Path | str, data: bytes, *, sync: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def recipient_lines(addresses: Iterable[str]) -> bytes:
    return b"".join(TODO_MARK + a.encode("utf-8", "surrogateescape") + b"\n" for a in addresses)


def read_recipients(path: Path) -> list[Recipient]:
    """The recipients of one channel file; [] when the file is gone (all done)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parse_recipients(data)


def parse_recipients(data: bytes) -> list[Recipient]:
    out: list[Recipient] = []
    offset = 0
    for line in data.split(b"\n"):
        if len(line) > 1 and line[:1] in (TODO_MARK, DONE_MARK):
            out.append(Recipient(line[1:].decode("utf-8", "surrogateescape"),
                                 line[:1] == DONE_MARK, offset))
        offset += len(line) + 1
    return out


def _write_mark(queue: Queue, channel: str, qid: str, offset: int) -> None:
    """One recipient's T overwritten with D (one byte: atomic on disk); fsynced here unless
    the caller's sync round covers it."""
    fd = os.open(queue.file(channel, qid), os.O_WRONLY)
    try:
        os.pwrite(fd, DONE_MARK, offset)
        if not SYNC_ROUNDS:
            os.fsync(fd)
    finally:
        os.close(fd)


def mark_done(queue: Queue, channel: str, qid: str, offset: int) -> None:
    """Overwrite one recipient's T with D and make it durable (one byte: atomic on disk)."""
    _write_mark(queue, channel, qid, offset)
    if SYNC_ROUNDS:
        FS_SYNC.sync(queue.file(channel, ""))


def add_bounce_report(queue: Queue, qid: str, report: BounceReport) -> None:
    """Append a failure report to bounce/N durably (before the recipient is marked done)."""
    line = json.dumps(report.__dict__, sort_keys=True).encode() + b"\n"
    fd = os.open(queue.path("bounce", qid), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:  # a full disk may take part of the line: write the rest or fail
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            # Cut a torn line off, so the next report does not land glued to it; the caller
            # keeps the recipient to do, and a failed fsync is never retried on this fd.
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def read_bounce_reports(queue: Queue, qid: str) -> list[BounceReport]:
    """The failure reports of a message, one per recipient (the last one wins)."""
    try:
        data = queue.path("bounce", qid).read_bytes()
    except FileNotFoundError:
        return []
    by_rcpt: dict[str, BounceReport] = {}
    for line in data.splitlines():
        try:
            raw = json.loads(line)
            report = BounceReport(**raw)
        except (ValueError, TypeError):
            continue  # a line torn by a crash; its recipient was not marked done and was retried
        by_rcpt[report.recipient] = report
    return list(by_rcpt.values())


# ---- todo: splitting committed messages ----------------------------------------------------------

def read_todos(queue: Queue, qids: list[str], check_max: int | None = None
               ) -> list[tuple[str, Envelope | Exception]]:
    """The envelopes of several todo entries, each checked against its message file, or the
    error reading each (TornMessage for a message a crash tore, which is to be removed).
    With `check_max`, a message larger than that is not checked here: its envelope comes
    back for the caller to check (`check_data`) where a long read does no harm."""
    out: list[tuple[str, Envelope | Exception]] = []
    for qid in qids:
        try:
            env = read_todo(queue, qid)
            if check_max is None or env.size <= check_max:
                check_data(queue, qid, env)
            out.append((qid, env))
        except (QueueError, OSError) as err:
            out.append((qid, err))
    return out


def read_todo(queue: Queue, qid: str) -> Envelope:
    """todo/N's envelope. An envelope that does not parse is TornMessage: every envelope is
    whole when it is renamed into todo/, so only a crash before its sync round leaves one."""
    try:
        with open(queue.file("todo", qid), "rb") as f:
            return Envelope.from_bytes(f.read())
    except (ValueError, TypeError) as err:
        raise TornMessage(f"queue: envelope todo/{qid} is torn: {err}") from err


def check_data(queue: Queue, qid: str, env: Envelope) -> None:
    """TornMessage unless mess/N holds exactly the octets the envelope's size and CRC-32
    describe. Of an envelope without a CRC (written before it was recorded) only the file's
    presence is checked: its injector made the data durable before the rename."""
    size, crc = 0, 0
    try:
        with open(queue.file("mess", qid), "rb", buffering=0) as f:
            if env.crc32 is None:
                return
            while block := f.read(CHECK_BLOCK):
                size += len(block)
                crc = zlib.crc32(block, crc)
    except FileNotFoundError as err:  # the disk lost the data's rename (or never had it)
        raise TornMessage(f"queue: todo/{qid} has no message file") from err
    if size != env.size or crc != env.crc32:
        raise TornMessage(f"queue: mess/{qid} is {size} octets with CRC-32 {crc:08x}, its "
                          f"envelope says {env.size} and {env.crc32:08x}")


def _sync_pool() -> ThreadPoolExecutor:
    global _SYNC_POOL
    if _SYNC_POOL is None:
        _SYNC_POOL = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="qsync")
    return _SYNC_POOL


def _sync_all(writes: list[tuple[Path | str, bytes]]) -> None:
    """Write and fsync many small files at once: parallel fsyncs share the file system's
    journal commits, where one after another each waits for its own."""
    for _ in _sync_pool().map(lambda item: _write_file(*item), writes):
        pass


def split_todo(queue: Queue, items: list[tuple[str, Envelope]],
               is_local: Callable[[str], bool]) -> list[StoredMessage]:
    """Turn committed envelopes into info/local/remote files, then remove their todo entries.

    Done for a batch at once so that the syncs run together. Until todo/N is gone (durably)
    no delivery of N starts, so a crash anywhere here just means doing it again.
    """
    return run_steps(split_todo_steps(queue, items, is_local))


def split_todo_steps(queue: Queue, items: list[tuple[str, Envelope]],
                     is_local: Callable[[str], bool]) -> Steps[list[StoredMessage]]:
    """`split_todo` as steps (fssync.Steps), for the send service's event loop; without
    syncfs rounds there are no steps (each file and directory fsynced here)."""
    out: list[StoredMessage] = []
    touched: set[str] = {"info"}
    writes: list[tuple[Path | str, bytes]] = []
    for qid, env in items:
        chans: dict[str, list[str]] = {"local": [], "remote": []}
        for rcpt in env.recipients:
            chans["local" if is_local(rcpt) else "remote"].append(rcpt)
        writes.append((queue.file("info", qid), env.to_bytes()))
        recipients: dict[str, list[Recipient]] = {}
        for channel, addresses in chans.items():
            path = queue.file(channel, qid)
            if addresses:
                lines = recipient_lines(addresses)
                writes.append((path, lines))
                touched.add(channel)
                recipients[channel] = parse_recipients(lines)
            else:
                _unlink(path)
                recipients[channel] = []
        out.append(StoredMessage(qid, env, recipients,
                                 os.path.exists(queue.file("bounce", qid))))
    if SYNC_ROUNDS:  # one round for every file and entry of the batch
        for written, data in writes:
            _write_file(written, data, sync=False)
        yield [queue.file("info", "")]
    else:
        _sync_all(writes)
        for name in sorted(touched):
            fsync_dir(queue.root / name)
    for qid, _ in items:
        _unlink(queue.file("todo", qid))
    if SYNC_ROUNDS:
        yield [queue.file("todo", "")]
    else:
        fsync_dir(queue.root / "todo")
    return out


# ---- reading what is there -----------------------------------------------------------------------

def load_message(queue: Queue, qid: str) -> StoredMessage | None:
    """A split message from disk, or None when its info file is missing or unreadable."""
    try:
        env = Envelope.from_bytes(queue.path("info", qid).read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None
    recipients = {c: read_recipients(queue.path(c, qid)) for c in CHANNELS}
    return StoredMessage(qid, env, recipients, queue.path("bounce", qid).exists())


def remove_message(queue: Queue, qid: str) -> None:
    """Remove every file of a message; mess/N last, so no file named N outlives inode N."""
    for state in ("todo", "bounce", "local", "remote", "info", "hold", "attempts"):
        _unlink(queue.file(state, qid))
    _unlink(queue.file("mess", qid))


def finish_channel(queue: Queue, channel: str, qid: str) -> None:
    """Every recipient of the channel is done: drop its file (it comes back all-D at worst)."""
    _unlink(queue.file(channel, qid))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def clean_orphans(queue: Queue, now: float | None = None) -> list[str]:
    """Remove what dead writers and interrupted removals left; returns what was removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    live = set(queue.ids("todo")) | set(queue.ids("info"))
    for qid in queue.ids("mess"):
        if qid in live:
            continue
        path = queue.path("mess", qid)
        try:
            if now - path.stat().st_mtime > MESS_ORPHAN_SECONDS:
                remove_message(queue, qid)
                removed.append(f"mess/{qid}")
        except FileNotFoundError:
            continue
    for state in ("local", "remote", "bounce", "hold", "attempts"):
        for qid in queue.ids(state):
            if qid not in live and not queue.path("mess", qid).exists():
                queue.path(state, qid).unlink(missing_ok=True)
                removed.append(f"{state}/{qid}")
    try:
        names = os.listdir(queue.root / "tmp")
    except FileNotFoundError:
        names = []
    for name in names:
        path = queue.root / "tmp" / name
        try:
            if now - path.stat().st_mtime > TMP_ORPHAN_SECONDS:
                path.unlink()
                removed.append(f"tmp/{name}")
        except FileNotFoundError:
            continue
    return removed


def mark_done_many(queue: Queue, marks: list[tuple[str, str, int]]) -> list[None | OSError]:
    """`mark_done` for several recipients (channel, qid, offset), each answered on its own:
    every mark written, then one sync round for all of them where syncfs rounds exist (an
    fsync of each file elsewhere). A failed round fails every mark it covered: they stay to
    do, and are written again (over a T or a D alike)."""
    return run_steps(mark_done_many_steps(queue, marks))


def mark_done_many_steps(queue: Queue, marks: list[tuple[str, str, int]]
                         ) -> Steps[list[None | OSError]]:
    """`mark_done_many` as steps (fssync.Steps), for the send service's event loop."""
    answers: list[None | OSError] = [None] * len(marks)
    written: list[int] = []
    for i, (channel, qid, offset) in enumerate(marks):
        try:
            _write_mark(queue, channel, qid, offset)
        except OSError as err:
            answers[i] = err
            continue
        written.append(i)
    if SYNC_ROUNDS and written:
        try:
            yield sorted({queue.file(marks[i][0], "") for i in written})
        except OSError as err:
            for i in written:
                answers[i] = err
    return answers
