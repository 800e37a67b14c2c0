"""The mail queue: durable injection, qmail's states, recovery and statistics.

    q = Queue(home.queue_dir)
    with q.open_message() as w:
        w.write(b"...")
        qid = w.commit(Envelope(sender="a@b", recipients=["c@d"]))

Leaving the `with` block without a commit removes everything written. See docs/queue.md.
"""

from __future__ import annotations

from .envelope import Envelope
from .errors import QueueError, TornMessage
from .inject import MessageWriter
from .layout import Queue

__all__ = ["Envelope", "MessageWriter", "Queue", "QueueError", "TornMessage"]
