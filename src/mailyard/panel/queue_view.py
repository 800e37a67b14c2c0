"""The queue as the panel sees it: counts always; list, purge and the rest through queue.admin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..queue import Queue
from . import optional

if TYPE_CHECKING:
    from ..home import Home

ADMIN = "mailyard.queue.admin"


def stats(home: Home) -> dict[str, int]:
    """Messages in Todo, Local and Remote (the queue's own counts when admin is absent)."""
    admin = optional.load(ADMIN)
    if admin is not None and hasattr(admin, "stats"):
        counts = admin.stats(home)
    else:
        counts = Queue(home.queue_dir).counts()
    return {name: int(counts.get(name, 0)) for name in ("todo", "local", "remote")}


def messages(home: Home, which: str) -> list[dict[str, Any]]:
    """Messages in the remote and/or local queue, newest first."""
    admin = optional.require(ADMIN)
    return [dict(m) if isinstance(m, dict) else vars(m) for m in admin.list(home, which)]
