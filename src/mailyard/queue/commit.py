"""Group commit: messages that finish at the same time share the queue's directory fsyncs.

A server hands each finished message to `GroupCommit.commit` and awaits its queue id. One
committer thread takes every message waiting when it is free as one batch, and for the batch:

1. prepares every message at once, on a small pool of threads (`MessageWriter.prepare`: data
   fsynced, envelope written and fsynced, both renamed into mess/ and todo/); their fsyncs run
   in parallel, so the disk's journal commits them together;
2. fsyncs mess/ and todo/ once for the whole batch (`sync_entries`);
3. answers every message of the batch, with one wake-up of the event loop, and wakes `send`
   once.

While one batch is on its way to the disk the next one gathers, so under load a batch holds
every message that finished during the previous batch's fsyncs, and the fsyncs per message
fall as the load rises; a lone message costs what a plain `MessageWriter.commit` costs.

What a caller is told keeps qmail's rule, per message: a queue id only once that message's
data, envelope and directory entries are durable. A message whose own fsync failed fails
alone (its descriptor is closed, never fsynced again; its files removed). A failed directory
fsync fails every message of the batch that was renamed before it, with a temporary error;
those messages stay in the queue (the client retries: a duplicate, never a loss), and the
next batch opens the directory afresh. Crash states and recovery: docs/queue.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .envelope import Envelope
from .errors import QueueError
from .inject import MessageWriter, sync_entries, wrap_error

if TYPE_CHECKING:
    from .layout import Queue

# Threads that fsync the messages of one batch in parallel. Ten concurrent writers reach about
# 9,000 fsynced files/s on the disk of issue 14's measurements, one writer about 3,000; more
# threads than sessions bring nothing. Postfix runs one cleanup process per session (100).
PREPARE_THREADS = 16
# Messages per batch at most: a bound on the work (and on the replies) one batch holds up.
MAX_BATCH = 256


@dataclass
class _Request:
    writer: MessageWriter
    envelope: Envelope
    done: Callable[[str | None, QueueError | None], None]


class GroupCommit:
    """The committer of one queue in one process (see the module's docstring)."""

    def __init__(self, queue: Queue, threads: int = PREPARE_THREADS) -> None:
        self.queue = queue
        self._threads = threads
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self.batches = 0  # batches committed so far (for tests and the benchmark)
        self.messages = 0

    # ---- the callers' side ------------------------------------------------------------------
    async def commit(self, writer: MessageWriter, envelope: Envelope) -> str:
        """The message's queue id once it is durable; QueueError if it could not be made so."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        def settle(qid: str | None, error: QueueError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert qid is not None
                future.set_result(qid)

        def done(qid: str | None, error: QueueError | None) -> None:  # in the committer
            try:
                loop.call_soon_threadsafe(settle, qid, error)
            except RuntimeError:
                pass  # the loop is closed: the process is ending and nobody waits any more

        self.submit(writer, envelope, done)
        return await future

    def submit(self, writer: MessageWriter, envelope: Envelope,
               done: Callable[[str | None, QueueError | None], None]) -> None:
        """Queue a message for the next batch; `done(qid, error)` is called from the
        committer thread once it is durable or has failed."""
        with self._cond:
            if self._stopping:
                raise QueueError("queue: the committer is stopping")
            self._pending.append(_Request(writer, envelope, done))
            if self._thread is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="queue-prepare")
                self._thread = threading.Thread(target=self._run, name="queue-commit",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Commit what is waiting, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._pool is not None:
            self._pool.shutdown()

    # ---- the committer thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Request]) -> None:
        results: list[tuple[str | None, QueueError | None]]
        if len(batch) == 1:
            results = [_prepare(batch[0])]
        else:
            assert self._pool is not None
            results = list(self._pool.map(_prepare, batch))
        if any(qid is not None for qid, _ in results):
            try:
                sync_entries(self.queue.root)
            except OSError as err:  # renamed, maybe not durable: report, never remove
                error = wrap_error(err, "make the queue entry durable")
                results = [(None, error) if qid is not None else (qid, exc)
                           for qid, exc in results]
        self.batches += 1
        self.messages += len(batch)
        for request, (qid, exc) in zip(batch, results, strict=True):
            request.done(qid, exc)
        if any(qid is not None for qid, _ in results):
            try:
                self.queue.trigger()
            except OSError:
                pass  # send looks at the whole queue when it starts and every few minutes


def _prepare(request: _Request) -> tuple[str | None, QueueError | None]:
    try:
        return request.writer.prepare(request.envelope), None
    except QueueError as exc:
        return None, exc
    except OSError as err:  # not expected from prepare, but never lose the answer
        return None, wrap_error(err, "commit the message")
