"""Putting a message into the queue: stream it in, then commit it at one atomic point.

The steps of `MessageWriter.commit` and why each is there are in docs/queue.md ("Injection").
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..durable import fsync_dir_fd
from ..services.privileges import mail_owner, running_as_root
from .envelope import Envelope
from .errors import QueueError

if TYPE_CHECKING:
    from .layout import Queue

# Writes are gathered to this size before reaching the file: SMTP hands us many short lines.
WRITE_BUFFER_BYTES = 64 * 1024
_sequence = itertools.count()
# A new file in the queue: never an existing name, never through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _close_all(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)




def _wrap(err: OSError, doing: str) -> QueueError:
    return QueueError(f"queue: cannot {doing}: {err.strerror or err}")


class MessageWriter:
    """Streams one message into the queue's tmp/ directory until `commit` or abandonment."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        name = f"{os.getpid()}.{time.time_ns()}.{next(_sequence)}"
        self._name = name
        self._tmp = queue.root / "tmp" / name
        self._buffer = bytearray()
        self.size = 0
        self.queue_id: str | None = None
        self._closed = False
        # The queue's directories are the mail owner's and root injects too (sendmail, the
        # panel): every create and rename goes through descriptors of them found without
        # following a link (safefs), so a planted link never aims root's writes elsewhere.
        self._tmp_dir: int | None = None
        try:
            self._tmp_dir = queue.state_dir_fd("tmp")
            self._fd = os.open(name, _NEW_FILE, 0o640, dir_fd=self._tmp_dir)
        except OSError as err:
            self._close_dir()
            raise _wrap(err, f"create a message file in {self._tmp.parent}") from err

    def _close_dir(self) -> None:
        if self._tmp_dir is not None:
            os.close(self._tmp_dir)
            self._tmp_dir = None

    def _unlink_tmp(self, name: str) -> None:
        if self._tmp_dir is not None:
            try:
                os.unlink(name, dir_fd=self._tmp_dir)
            except FileNotFoundError:
                pass

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
        return self._tmp

    # ---- the end ------------------------------------------------------------------------------
    def commit(self, envelope: Envelope) -> str:
        """Make the message durable and due for delivery; returns its queue id."""
        if self._closed:
            raise QueueError("queue: the message was already committed or abandoned",
                             temporary=False)
        envelope.validate()
        self._flush()
        try:
            os.utime(self._fd)  # its age, for the clean-up of orphans, starts at commit
            os.fsync(self._fd)
            qid = str(os.fstat(self._fd).st_ino)
            if running_as_root():
                os.fchown(self._fd, *mail_owner())
        except OSError as err:
            self.abandon()
            raise _wrap(err, "save the message to disk") from err
        os.close(self._fd)
        self._closed = True
        env_name = f"{qid}.envelope"
        tmp_dir = self._tmp_dir
        assert tmp_dir is not None
        envelope.time = time.time()
        envelope.qp = os.getpid()
        envelope.size = self.size
        if envelope.uid is None:
            envelope.uid = os.getuid()
        try:
            self._unlink_tmp(env_name)  # a leftover (or planted) name: removed, not followed
            fd = os.open(env_name, _NEW_FILE, 0o640, dir_fd=tmp_dir)
            try:
                data = envelope.to_bytes()
                if os.write(fd, data) != len(data):
                    raise OSError(28, "short write of the envelope")
                os.fsync(fd)
                if running_as_root():
                    os.fchown(fd, *mail_owner())
            finally:
                os.close(fd)
        except OSError as err:
            self._unlink_tmp(env_name)
            self._unlink_tmp(self._name)
            self._close_dir()
            raise _wrap(err, "save the envelope") from err
        mess_dir = todo_dir = None
        try:
            mess_dir = self.queue.state_dir_fd("mess")
            todo_dir = self.queue.state_dir_fd("todo")
            os.rename(self._name, qid, src_dir_fd=tmp_dir, dst_dir_fd=mess_dir)
            os.rename(env_name, qid, src_dir_fd=tmp_dir, dst_dir_fd=todo_dir)  # commit point
        except OSError as err:
            self._unlink_tmp(env_name)
            self._unlink_tmp(self._name)
            if mess_dir is not None:
                try:
                    os.unlink(qid, dir_fd=mess_dir)
                except OSError:
                    pass
            _close_all(mess_dir, todo_dir)
            self._close_dir()
            raise _wrap(err, "move the message into the queue") from err
        self.queue_id = qid
        self._close_dir()
        try:  # both renames durable before we return (todo/N without mess/N is dropped)
            fsync_dir_fd(mess_dir)
            fsync_dir_fd(todo_dir)
        except OSError as err:  # committed, maybe not yet durable: report, never remove
            raise _wrap(err, "make the queue entry durable") from err
        finally:
            _close_all(mess_dir, todo_dir)
        self.queue.trigger()
        return qid

    def abandon(self) -> None:
        """Remove everything written so far (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass
        if self.queue_id is None:
            self._unlink_tmp(self._name)
        self._close_dir()

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.queue_id is None:
            self.abandon()
