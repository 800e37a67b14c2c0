"""Putting a message into the queue: stream it in, then commit it at one atomic point.

The steps of `MessageWriter.commit` and why each is there are in docs/queue.md ("Injection").
"""

from __future__ import annotations

import itertools
import os
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .. import safefs
from ..durable import fsync_dir, fsync_dir_fd
from ..services.privileges import mail_owner, running_as_root
from .envelope import Envelope
from .errors import QueueError

if TYPE_CHECKING:
    from .layout import Queue

# Writes are gathered to this size before reaching the file: SMTP hands us many short lines.
WRITE_BUFFER_BYTES = 64 * 1024
_sequence = itertools.count()
# The directories whose entries a commit adds, fsynced in this order (mess/N before todo/N
# is named durably; todo/N without mess/N is dropped by recovery anyway).
ENTRY_DIRS = ("mess", "todo")


# A new file in the queue: never an existing name, never through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# The queue's directories are the mail owner's, and root injects too (sendmail, the panel):
# as root, every create, rename and fsync goes through descriptors of them found without
# following a link (safefs), so a link the mail owner planted never aims root's writes
# elsewhere. The services that inject most (smtp, submission, send) run as the mail owner,
# for whom a link leads nowhere it could not write anyway; they use plain paths, one system
# call each.

def state_fd(root: Path, state: str) -> int:
    """An O_PATH descriptor of root/state, reached from root's parent without a link."""
    return safefs.open_dir(root.parent, f"{root.name}/{state}")


def sync_entries(root: Path) -> None:
    """Make the renames into mess/ and todo/ durable: one fsync per directory, covering every
    message renamed into it before the call."""
    for name in ENTRY_DIRS:
        if running_as_root():
            fd = state_fd(root, name)
            try:
                fsync_dir_fd(fd)
            finally:
                os.close(fd)
        else:
            fsync_dir(root / name)


def _create(root: Path, name: str, mode: int) -> int:
    """A new file root/tmp/NAME open for writing."""
    if not running_as_root():  # (paths as text: Path objects cost per message here)
        return os.open(f"{root}/tmp/{name}", _NEW_FILE, mode)
    tmp_dir = state_fd(root, "tmp")
    try:
        return os.open(name, _NEW_FILE, mode, dir_fd=tmp_dir)
    finally:
        os.close(tmp_dir)


def _rename_in(root: Path, name: str, state: str, qid: str) -> None:
    """root/tmp/NAME becomes root/STATE/QID."""
    if not running_as_root():
        os.rename(f"{root}/tmp/{name}", f"{root}/{state}/{qid}")
        return
    src, dst = state_fd(root, "tmp"), state_fd(root, state)
    try:
        os.rename(name, qid, src_dir_fd=src, dst_dir_fd=dst)
    finally:
        os.close(src)
        os.close(dst)


def _remove(root: Path, state: str, name: str) -> None:
    try:
        if not running_as_root():
            os.unlink(f"{root}/{state}/{name}")
            return
        fd = state_fd(root, state)
        try:
            os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
    except FileNotFoundError:
        pass


def wrap_error(err: OSError, doing: str) -> QueueError:
    return _wrap(err, doing)


def _wrap(err: OSError, doing: str) -> QueueError:
    return QueueError(f"queue: cannot {doing}: {err.strerror or err}")


class MessageWriter:
    """Streams one message into the queue's tmp/ directory until `commit` or abandonment."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        name = f"{os.getpid()}.{time.time_ns()}.{next(_sequence)}"
        self._name = name
        self._buffer = bytearray()
        self.size = 0
        self._crc = 0  # CRC-32 of every octet flushed to the file so far
        self.queue_id: str | None = None
        self._closed = False
        self._staged: str | None = None  # the queue id once `stage` has run
        self._env_name: str | None = None
        self._env_fd: int | None = None
        try:
            self._fd = _create(queue.root, name, 0o640)
        except OSError as err:
            raise _wrap(err, f"create a message file in {queue.root / 'tmp'}") from err

    # ---- streaming -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closed:
            raise QueueError("queue: write after the message was committed or abandoned",
                             temporary=False)
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= WRITE_BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._crc = zlib.crc32(self._buffer, self._crc)
        view = memoryview(self._buffer)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
        except OSError as err:
            self.abandon()
            raise _wrap(err, "write the message") from err
        finally:
            view.release()
        self._buffer.clear()

    @property
    def path(self) -> Path:
        """The file holding every byte written so far (for filters that scan it)."""
        if self._buffer and not self._closed:
            self._flush()
        return self.queue.root / "tmp" / self._name

    # ---- the end ------------------------------------------------------------------------------
    def commit(self, envelope: Envelope) -> str:
        """Make the message durable and due for delivery; returns its queue id.

        One message on its own: `prepare` it, make the directory entries durable, wake `send`.
        A server with many messages at once uses `commit.GroupCommit`, which shares the last
        two steps among every message of a batch."""
        qid = self.prepare(envelope)
        try:  # both renames durable before we return (todo/N without mess/N is dropped)
            sync_entries(self.queue.root)
        except OSError as err:  # committed, maybe not yet durable: report, never remove
            raise _wrap(err, "make the queue entry durable") from err
        self.queue.trigger()
        return qid

    def prepare(self, envelope: Envelope) -> str:
        """Steps 1 to 4 of the commit (docs/queue.md): data and envelope written and fsynced,
        then renamed into mess/ and todo/. The names are not yet durable: the caller fsyncs
        the directories (`sync_entries`) before anyone is told the message was accepted.
        Any failure removes what was written and raises QueueError; the data's descriptor is
        closed whatever happens, so a failed fsync is never retried on it."""
        qid = self.stage(envelope, keep_open=True)
        self.sync_staged()
        self.publish()
        return qid

    # The same steps one by one, for a committer that makes many messages durable at once
    # (`commit.GroupCommit`): stage every message, sync them all (their own fsyncs, or one
    # syncfs of the filesystem), publish them, sync the directories.

    def stage(self, envelope: Envelope, *, keep_open: bool = False) -> str:
        """Steps 1 and 2 without their fsyncs: the data and `tmp/N.envelope` written; the
        queue id N. With `keep_open` both descriptors stay open for `sync_staged`, else they
        are closed (the caller makes them durable with a sync of the whole filesystem).
        A failure removes what was written and raises QueueError."""
        if self._closed:
            raise QueueError("queue: the message was already committed or abandoned",
                             temporary=False)
        envelope.validate()
        root = self.queue.root
        self._flush()
        try:
            os.utime(self._fd)  # its age, for the clean-up of orphans, starts at commit
            qid = str(os.fstat(self._fd).st_ino)
            if running_as_root():
                os.fchown(self._fd, *mail_owner())
        except OSError as err:
            self.abandon()
            raise _wrap(err, "save the message to disk") from err
        env_name = f"{qid}.envelope"
        envelope.time = time.time()
        envelope.qp = os.getpid()
        envelope.size = self.size
        envelope.crc32 = self._crc
        if envelope.uid is None:
            envelope.uid = os.getuid()
        try:
            fd = _create(root, env_name, 0o640)
            try:
                data = envelope.to_bytes()
                if os.write(fd, data) != len(data):
                    raise OSError(28, "short write of the envelope")
                if running_as_root():
                    os.fchown(fd, *mail_owner())
            except BaseException:
                os.close(fd)
                raise
        except OSError as err:
            _remove(root, "tmp", env_name)
            self.abandon()
            raise _wrap(err, "save the envelope") from err
        self._env_name = env_name
        self._staged = qid
        if keep_open:
            self._env_fd = fd
        else:
            os.close(fd)
            os.close(self._fd)
            self._closed = True
        return qid

    def sync_staged(self) -> None:
        """fsync the data and the envelope kept open by `stage`, and close both, whatever
        happens (a failed fsync is never retried on its descriptor). A failure removes the
        message's files and raises QueueError."""
        assert self._staged is not None and self._env_fd is not None
        env_fd, self._env_fd = self._env_fd, None
        doing = "save the message to disk"
        try:
            os.fsync(self._fd)
            doing = "save the envelope"
            os.fsync(env_fd)
        except OSError as err:
            os.close(env_fd)
            self.abandon()
            raise _wrap(err, doing) from err
        os.close(env_fd)
        os.close(self._fd)
        self._closed = True

    def publish(self) -> None:
        """Steps 3 and 4: the data renamed to mess/N, the envelope to todo/N (the commit
        point). The names are durable only once mess/ and todo/ are synced. A failure removes
        the message and raises QueueError."""
        qid = self._staged
        assert qid is not None and self._closed and self._env_name is not None
        root = self.queue.root
        try:
            _rename_in(root, self._name, "mess", qid)
            _rename_in(root, self._env_name, "todo", qid)  # the commit point
        except OSError as err:
            self.abandon()
            _remove(root, "mess", qid)
            raise _wrap(err, "move the message into the queue") from err
        self.queue_id = qid

    def abandon(self) -> None:
        """Remove everything written so far, the staged envelope too (idempotent); nothing
        once the message is in the queue."""
        if self._env_fd is not None:
            os.close(self._env_fd)
            self._env_fd = None
        if self._env_name is not None and self.queue_id is None:
            _remove(self.queue.root, "tmp", self._env_name)
            self._env_name = None
        if not self._closed:
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass
        if self.queue_id is None:
            _remove(self.queue.root, "tmp", self._name)

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.queue_id is None:
            self.abandon()
