"""Group commit: messages that finish at the same time share the rounds that make them durable.

A server hands each finished message to `GroupCommit.commit` and awaits its queue id. The
committer works on the server's event loop; the sync calls are made by a helper of its own
(with syncfs the `SyncProcess`, with fsync a thread). A sync round is one call there; the
next group gathers while a round runs, so under load each round carries every message that
finished during the previous one, and the cost per message falls as the load rises. What a
round does, and how many a message waits for, depends on `method`:

* `syncfs` (Linux 5.8 or later, the default there): one round. At once, on the loop, the
  message is staged (data flushed, `tmp/N.envelope` written: `MessageWriter.stage`) and
  published (renamed into mess/ and todo/: `MessageWriter.publish`); it gets its queue id
  once a round that *started after its renames* has returned. That round is one `syncfs(2)`
  of the queue's filesystem, which makes every file, inode and directory entry written
  before the call durable, and reports any writeback error of the filesystem since the
  descriptor it is called on was opened or last reported one. A crash before that round
  returned may leave todo/N and mess/N named but their contents not (yet) written: the
  envelope records the data's size and CRC-32, and send removes a todo/N that does not parse
  or whose mess/N does not match it (`state.check_data`). No such message was answered.
* `fsync` (elsewhere, and where syncfs would not report errors): two rounds, qmail's order.
  The first fsyncs each staged message's data and envelope; then the message is renamed;
  the second fsyncs mess/ and todo/ for every message renamed before it, and answers them.
  A round serves both groups at once.

The rule stays qmail's, per message: a queue id only once that message's data, envelope and
directory entries are durable (the suite checks it from an strace of the running service),
and a crash leaves each message in a state recovery handles (docs/queue.md). A failure fails
exactly what the round covered, with a temporary error:

* fsync of a message's own file: that message alone (its descriptors closed, never fsynced
  again; its files removed);
* fsync of a directory: every message renamed before it (they stay in the queue: a retry by
  the client is a duplicate, never a loss);
* syncfs: every message the committer holds (renamed: they stay, as above), and every
  message begun before it (its data may have been written back, and failed, before the error
  was reported); the descriptor is closed and a new one opened, so the error is never
  "retried away" on it.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..fssync import syncfs_fd as syncfs
from ..services.privileges import running_as_root
from ..sync_process import SyncProcess
from .envelope import Envelope
from .errors import QueueError
from .inject import MessageWriter, state_fd, sync_entries, wrap_error

if TYPE_CHECKING:
    from .layout import Queue

SYNCFS = "syncfs"
FSYNC = "fsync"
# syncfs(2) reports writeback errors from Linux 5.8 on; before, it could succeed although a
# file's data never reached the disk, so it is not used there.
SYNCFS_SINCE = (5, 8)
# Messages one round stages or publishes at most: a bound on the work (and on the replies)
# one round holds up; the rest waits for the next round.
MAX_BATCH = 256

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _kernel(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def default_method() -> str:
    """syncfs where it reports writeback errors, else one fsync per file."""
    if _libc is not None and hasattr(_libc, "syncfs") and \
            _kernel(os.uname().release) >= SYNCFS_SINCE:
        return SYNCFS
    return FSYNC


@dataclass(eq=False)
class _Entry:
    writer: MessageWriter
    qid: str
    future: asyncio.Future[str]

    def answer(self, error: QueueError | None = None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(self.qid)


class GroupCommit:
    """The committer of one queue in one process (see the module's docstring)."""

    def __init__(self, queue: Queue, method: str | None = None) -> None:
        self.queue = queue
        self.method = method or default_method()
        if self.method not in (SYNCFS, FSYNC):
            raise ValueError(f"queue commit method {self.method!r}: use {SYNCFS} or {FSYNC}")
        self._staged: list[_Entry] = []
        self._renamed: list[_Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None  # the fsync rounds' thread
        self._sync: SyncProcess | None = None  # the syncfs rounds' process
        self._answer: asyncio.Future[int] | None = None  # the syncfs round under way
        self._trigger: int | None = None  # the queue's trigger, kept open for writing
        # Raised by every failed syncfs: a message begun before it may have lost data.
        self.generation = 0
        self.rounds = 0  # sync rounds so far (for tests and the benchmark)
        self.batches = 0  # rounds that answered messages
        self.messages = 0  # messages answered

    # ---- the callers' side ------------------------------------------------------------------
    async def commit(self, writer: MessageWriter, envelope: Envelope,
                     generation: int | None = None) -> str:
        """The message's queue id once it is durable; QueueError if it could not be made so.
        `generation` is `self.generation` when the message was begun, if known: a message
        begun before a failed syncfs fails too."""
        return await self.submit(writer, envelope, generation)

    def submit(self, writer: MessageWriter, envelope: Envelope,
               generation: int | None = None) -> asyncio.Future[str]:
        """`commit` without a coroutine of its own: the future of the queue id (a failure to
        stage or publish is raised at once). Cancelling the caller never cancels it."""
        if generation is not None and generation != self.generation:
            writer.abandon()
            raise QueueError("queue: a disk error was reported while the message came in")
        loop = asyncio.get_running_loop()
        qid = writer.stage(envelope, keep_open=self.method == FSYNC)  # QueueError: to caller
        entry = _Entry(writer, qid, loop.create_future())
        if self.method == SYNCFS:  # one round covers the files and the names together
            writer.publish()  # QueueError: to the caller, the message removed
            self._renamed.append(entry)
        else:
            self._staged.append(entry)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return entry.future

    def close(self) -> None:
        """Stop the sync process or thread (every commit has been answered by then: the
        servers wait for their sessions' commits before they stop)."""
        for entry in self._staged + self._renamed:
            entry.writer.abandon()
            entry.answer(QueueError("queue: the committer is stopping"))
        self._staged, self._renamed = [], []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._stop_sync()
        if self._trigger is not None:
            os.close(self._trigger)
            self._trigger = None

    # ---- the rounds ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._staged or self._renamed:
            staged, self._staged = self._staged[:MAX_BATCH], self._staged[MAX_BATCH:]
            renamed, self._renamed = self._renamed[:MAX_BATCH], self._renamed[MAX_BATCH:]
            try:
                if self.method == SYNCFS:
                    failed = await self._syncfs_round()
                else:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(1, thread_name_prefix="queue-sync")
                    failed = await loop.run_in_executor(self._pool, self._round, staged,
                                                        renamed)
            except OSError as err:
                self._syncfs_failed(err, staged, renamed)
                continue
            except BaseException as exc:  # a bug of ours, or the loop ending: nobody hangs
                self._syncfs_failed(OSError(0, f"{type(exc).__name__}: {exc}"), staged,
                                    renamed)
                raise
            finally:
                self.rounds += 1
            answered = 0
            for entry in renamed:
                entry.answer(failed.get(entry))
                answered += 1
            for entry in staged:
                if entry in failed:
                    entry.answer(failed[entry])
                    continue
                try:
                    entry.writer.publish()
                except QueueError as exc:
                    entry.answer(exc)
                    continue
                self._renamed.append(entry)
            if answered:
                self.batches += 1
                self.messages += answered
                if any(entry not in failed for entry in renamed):
                    self._wake_send()

    def _wake_send(self) -> None:
        """Pull the queue's trigger, on a descriptor kept open from round to round (an open,
        an fstat and a close fewer per round); a broken one is opened again next time."""
        try:
            if self._trigger is None:
                self._trigger = self.queue.open_trigger()
            if self._trigger is not None:
                self.queue.pull_trigger(self._trigger)
        except OSError:  # send went away: send looks at the whole queue when it starts
            if self._trigger is not None:
                os.close(self._trigger)
                self._trigger = None

    async def _syncfs_round(self) -> dict[_Entry, QueueError]:
        """One syncfs by the sync process, begun now; OSError if it failed (or the process
        ended: it is started again for the next round)."""
        loop = asyncio.get_running_loop()
        if self._sync is None:
            self._sync = SyncProcess(self._open_queue_fd, syncfs)
            loop.add_reader(self._sync.answers, self._on_answer)
        self._answer = loop.create_future()
        self._sync.ask()
        if self._sync.ended:
            self._stop_sync()
            raise OSError(errno.EIO, "the queue's sync process ended")
        code = await self._answer
        if code:
            raise OSError(code, os.strerror(code))
        return {}

    def _on_answer(self) -> None:
        assert self._sync is not None
        try:
            code = self._sync.answer()
        except EOFError:
            self._stop_sync()
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(OSError(errno.EIO, "the queue's sync process ended"))
            return
        if code is not None and self._answer is not None and not self._answer.done():
            self._answer.set_result(code)

    def _stop_sync(self) -> None:
        if self._sync is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sync.answers)
            except RuntimeError:
                pass  # no loop runs any more (the service is stopping)
            self._sync.close()
            self._sync = None

    def _round(self, staged: list[_Entry], renamed: list[_Entry]) -> dict[_Entry, QueueError]:
        """In the sync thread (fsync method): make the files of `staged` and the names of
        `renamed` durable; the entries that failed."""
        failed: dict[_Entry, QueueError] = {}
        for entry in staged:
            try:
                entry.writer.sync_staged()
            except QueueError as exc:
                failed[entry] = exc
        if renamed:
            try:
                sync_entries(self.queue.root)
            except OSError as err:  # renamed, maybe not durable: report, never remove
                error = wrap_error(err, "make the queue entry durable")
                failed.update((entry, error) for entry in renamed)
        return failed

    def _open_queue_fd(self) -> int:
        """A new descriptor of the queue's tmp/ for syncfs (in the sync process)."""
        root = self.queue.root
        if running_as_root():  # reached without following a link the mail owner made
            path_fd = state_fd(root, "tmp")
            try:
                return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                               dir_fd=path_fd)
            finally:
                os.close(path_fd)
        return os.open(root / "tmp", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _syncfs_failed(self, err: OSError, staged: list[_Entry],
                       renamed: list[_Entry]) -> None:
        """A round failed as a whole (a syncfs failed): every message held fails (the sync
        process has opened a new descriptor for the next round)."""
        self.generation += 1
        error = wrap_error(err, "make the message durable")
        for entry in renamed:  # renamed, maybe not durable: report, never remove
            entry.answer(error)
        for entry in staged + self._staged:
            entry.writer.abandon()
            entry.answer(error)
        for entry in self._renamed:
            entry.answer(error)
        self._staged, self._renamed = [], []
