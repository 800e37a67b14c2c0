"""The queue as the panel sees it: counts always; list, purge and the rest through queue.admin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..queue import Queue
from ..queue.layout import QUEUES
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
    return {name: int(counts.get(name, 0)) for name in QUEUES}


# The page's "Queue:" menu and what each choice lists (queue.admin's own names).
LIST_CHOICES: dict[str, str] = {"remote+local": "all", "remote": "remote", "local": "local",
                                "todo": "todo"}


def _age(seconds: int) -> str:
    days, rest = divmod(max(0, int(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def message_row(item: Any) -> dict[str, Any]:
    """One queued message as the list shows it (plain data; escaping is the template's job)."""
    recipients = [r.address if hasattr(r, "address") else str(r["address"])
                  for r in item.recipients]
    return {"id": str(item.id), "date": item.date, "age_seconds": int(item.age_seconds),
            "age": _age(item.age_seconds), "size": int(item.size), "sender": item.sender or "<>",
            "recipients": recipients, "status": item.status}


def messages(home: Home, which: str) -> list[dict[str, Any]]:
    """Messages of the chosen part of the queue, oldest first."""
    admin = optional.require(ADMIN)
    return [message_row(m) for m in admin.list_messages(home, LIST_CHOICES[which])]
