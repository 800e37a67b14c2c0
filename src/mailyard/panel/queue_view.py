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


# ---- the queue browser (filters, paging, per-recipient states) ----------------------------------

# Messages per page of the Mail Queue page unless the address asks for another number.
PAGE_SIZE = 50


def recipient_row(r: Any) -> dict[str, Any]:
    return {"address": r.address, "channel": r.channel, "done": bool(r.done), "state": r.state,
            "attempts": int(r.attempts), "last_reply": r.last_reply, "next_retry": r.next_retry}


def browse_row(item: Any) -> dict[str, Any]:
    """One message of a browser page: the list's row with each recipient's state."""
    return message_row(item) | {
        "recipients": [recipient_row(r) for r in item.recipients],
        "held": bool(item.held), "hold_reason": item.hold_reason,
        "client_ip": item.client_ip, "auth_user": item.auth_user}


def browse(home: Home, f: Any, offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of the messages the filter (queue.select.Filter) picks, and how many match."""
    admin = optional.require(ADMIN)
    found: dict[str, Any] = admin.page(home, f, offset, limit)
    return found | {"messages": [browse_row(m) for m in found["messages"]]}
