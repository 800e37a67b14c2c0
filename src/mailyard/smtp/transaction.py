"""One message on its way into the queue: the DATA octets as they stream, and their commit.

The conversation feeds it the machine's `DataChunk`s from its one read loop and asks it to
commit at `EndOfData`. It holds the queue writer, the size so far and the first write failure;
what to answer is the policy's, the conversation sends it.
"""

from __future__ import annotations

import asyncio

from ..queue import Envelope, MessageWriter, Queue, QueueError
from . import policy as P
from .msgid import HeaderScan


class Incoming:
    """The queue writer of one DATA transaction and what happened to it so far."""

    def __init__(self, queue: Queue, policy: P.Policy, recipients: list[str]) -> None:
        self.queue = queue
        self.policy = policy
        self.recipients = recipients
        # A failed sync of the queue since this message began fails it too (queue.commit).
        self.generation = queue.committer.generation
        self.writer: MessageWriter = queue.open_message()  # QueueError goes to the caller
        self.size = 0  # octets the client sent, stored or not
        self.failure: QueueError | None = None
        self.oversize = False
        self.header = HeaderScan()  # the header block, for the Message-ID of the log line

    def write(self, data: bytes) -> None:
        """Store octets; after a failure or past the size limit, only count them."""
        self.size += len(data)
        self.header.feed(data)
        if self.failure is not None or self.oversize:
            return
        if P.size_exceeded(self.policy, self.size):
            self.oversize = True  # keep reading to the end, but store nothing more
            self.writer.abandon()
            return
        try:
            self.writer.write(data)
        except QueueError as exc:
            self.failure = exc

    async def commit(self, envelope: Envelope) -> str:
        """Make the message durable (with the others finishing now: `queue.commit`); its queue
        id. A cancellation (shutdown) waits for the commit to end: the writer is never
        abandoned while its commit runs."""
        committer = self.queue.committer
        return await _uncancellable(committer.submit(self.writer, envelope, self.generation))

    def abandon(self) -> None:
        self.writer.abandon()


async def _uncancellable(future: asyncio.Future[str]) -> str:
    """Wait for `future` even if we are cancelled meanwhile; pass the cancellation on after."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
