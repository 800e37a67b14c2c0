"""The queue as the panel sees it: counts, the list, one message, and the changes (delete,
purge, process, a test message), all through queue.admin.

The queue is the mail owner's and the panel runs as mailyard-panel, so every one of these is
done by the root helper in a child that is the mail owner (services/helper.py, request
`queue`); changes reach a running send service as its request files (queue/control.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..queue.layout import QUEUES
from ..services import helper
from . import optional

if TYPE_CHECKING:
    from ..home import Home

ADMIN = "mailyard.queue.admin"


class QueueRefused(ValueError):
    """No such message, no such queue, a bad test address: the caller's mistake."""


class QueueUnavailable(RuntimeError):
    """The helper did not do it (the node is not running, or the work failed)."""


def ask(home: Home, action: str, **args: Any) -> Any:
    """One queue request to the root helper (carried out as the mail owner)."""
    try:
        return helper.call(home, "queue", action=action, **args)
    except helper.HelperRefused as exc:
        raise QueueRefused(str(exc)) from None
    except helper.HelperError as exc:
        raise QueueUnavailable(str(exc)) from None


def stats(home: Home) -> dict[str, int]:
    """Messages in Todo, Local and Remote."""
    counts = ask(home, "stats")
    return {name: int(counts.get(name, 0)) for name in QUEUES}


def show(home: Home, qid: str) -> dict[str, Any]:
    return dict(ask(home, "show", id=qid))


def delete(home: Home, qid: str) -> dict[str, Any]:
    return dict(ask(home, "delete", id=qid))


def purge(home: Home, which: str) -> dict[str, Any]:
    return dict(ask(home, "purge", which=which))


def process(home: Home) -> dict[str, Any]:
    return dict(ask(home, "process"))


def send_test(home: Home, to: str, subject: str, body: str) -> dict[str, Any]:
    return dict(ask(home, "test-message", to=to, subject=subject, body=body))


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
    optional.require(ADMIN)
    return [message_row(SimpleNamespace(**m)) for m in ask(home, "list", which=LIST_CHOICES[which])]


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


def _namespace(m: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**m | {"recipients": [SimpleNamespace(**r) for r in m["recipients"]]})


def browse(home: Home, f: Any, offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of the messages the filter (queue.select.Filter) picks, and how many match.
    Read by the helper's mail owner worker, which keeps the queue listing's cache between
    pages (queue/listing.py)."""
    optional.require(ADMIN)
    found: dict[str, Any] = dict(ask(home, "browse", filter=f.to_dict(), offset=offset,
                                     limit=limit))
    return found | {"messages": [browse_row(_namespace(m)) for m in found["messages"]]}


def act(home: Home, action: str, ids: list[str], f: Any, reason: str | None) -> dict[str, Any]:
    """Hold, release, retry, bounce or delete the messages named by `ids` and/or picked by
    the filter `f` (None: ids only), as queue.admin.act does; QueueRefused when the helper
    refuses (e.g. nothing named)."""
    return dict(ask(home, "act", operation=action, ids=list(ids),
                    filter=None if f is None else f.to_dict(), reason=reason))
