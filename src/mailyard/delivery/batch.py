"""Thread jobs of many deliveries at once: one hop to a worker thread per batch, not per call.

The send service's deliveries each need a few blocking steps (read the message, write the
Maildir file, write the done mark, remove the message's files). Done one `asyncio.to_thread`
per step and per delivery, the hand-offs cost more CPU than the steps (the profile in
bench/README.md, "End-to-end"), and the syncs of the steps are only shared when threads
happen to meet. A `Batcher` gathers the calls made while the loop runs one turn, or while its
previous batch is still in its thread (group commit, as the queue's commit does), and hands
them to one function that does them all in one thread job: so the function can do every
item's first step, then one sync round for all, then every item's next step.

Where a batch's blocking steps are only file work between sync rounds, `Batcher.steps` runs
it on the event loop instead, written as `fssync.Steps`, with the rounds made by the
service's sync process (sync_process.LoopSync): no thread at all, so no GIL hand-off (the
profile in bench/README.md, "End-to-end": about 120 futex calls per message with threads).

The batch function answers each item on its own (a value, or the exception for that item):
one item's failure is never another's. An exception out of the whole function fails every
item of that batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ..fssync import Steps
from ..sync_process import LoopSync

T = TypeVar("T")
R = TypeVar("R")

# Items one thread job takes at most: bounds how long one batch keeps its callers waiting;
# the rest go in the next batch (the queue's commit takes 256, queue/commit.py MAX_BATCH; a
# batch here is bounded by the local concurrency anyway, send.local_concurrency).
MAX_BATCH = 256


class Batcher(Generic[T, R]):
    """Calls of `function` gathered into one thread job (see the module's docstring)."""

    def __init__(self, function: Callable[[list[T]], Sequence[R | BaseException]],
                 max_batch: int = MAX_BATCH) -> None:
        """Each batch is one call of `function` in a worker thread."""
        self._run_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]] = \
            lambda items: asyncio.to_thread(function, items)
        self._max = max_batch
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False  # a batch is gathering (this turn) or running in a thread
        self.batches = 0  # thread jobs run (for tests and the benchmark)
        self.items = 0  # items they did

    @classmethod
    def steps(cls, function: Callable[[list[T]], Steps[Sequence[R | BaseException]]],
              sync: LoopSync, max_batch: int = MAX_BATCH) -> Batcher[T, R]:
        """Each batch's steps run on the event loop, their rounds by `sync` (no thread)."""
        batcher: Batcher[T, R] = cls(lambda items: [], max_batch)
        batcher._run_batch = lambda items: sync.run(function(items))
        return batcher

    async def submit(self, item: T) -> R:
        """The item's answer once its batch has run; the item's exception if it failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append((item, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start)  # the rest of this turn's callers join the batch
        return await future

    def _start(self) -> None:
        taken, self._items = self._items[:self._max], self._items[self._max:]
        asyncio.ensure_future(self._run(taken))

    async def _run(self, taken: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers: Sequence[R | BaseException] = await self._run_batch(
                [item for item, _ in taken])
            if len(answers) != len(taken):
                raise RuntimeError(f"a batch of {len(taken)} got {len(answers)} answers")
        except BaseException as exc:  # the whole job failed (or the loop is ending)
            answers = [exc] * len(taken)
            if not isinstance(exc, Exception):
                self._answer(taken, answers)
                self._busy = False
                raise
        self.batches += 1
        self.items += len(taken)
        self._answer(taken, answers)
        if self._items:
            self._start()
        else:
            self._busy = False

    @staticmethod
    def _answer(taken: list[tuple[T, asyncio.Future[R]]],
                answers: Sequence[R | BaseException]) -> None:
        for (_, future), answer in zip(taken, answers, strict=True):
            if future.done():  # its caller was cancelled (a stop): nothing to tell
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


def each(function: Callable[[T], R]) -> Callable[[list[T]], list[R | BaseException]]:
    """A batch function doing `function` for every item, each failure for its item only."""
    def run(items: list[T]) -> list[R | BaseException]:
        out: list[R | BaseException] = []
        for item in items:
            try:
                out.append(function(item))
            except Exception as exc:
                out.append(exc)
        return out
    return run
