"""limits.hold_when_over: when a sender passes an outbound limit, the mail it queued before
(accepted while it was under the limit, perhaps still waiting for a remote server) is held
for an administrator to look at, as Postfix's `HOLD` action would, rather than left to go.

The key of the refusal names the sender (smtp/ratelimit.py): `mailbox:ADDRESS` (SMTP AUTH
user), `uid:N` (a local user through sendmail) or `ip:ADDRESS` (a client allowed to relay
without AUTH); each becomes a queue filter on the envelope's auth_user, uid or client_ip. A
`domain:` key is not one sender: its mailboxes' own keys hold their own mail.

The hold goes through queue.admin.act, so a running send service carries it out (it alone
changes the queue while it runs) and a stopped one is worked around under the queue's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..queue import admin
from ..queue.errors import QueueError
from ..queue.select import Filter, make_filter

if TYPE_CHECKING:
    from ..home import Home

HOLD_REASON = "over its outbound rate limit ({key}; limits.hold_when_over): review and release"


def filter_for(key: str) -> Filter | None:
    """The queue filter that picks the mail of the sender `key` names; None for a domain
    key (or a key of a kind this version does not know)."""
    kind, _, value = key.partition(":")
    if not value:
        return None
    if kind == "mailbox":
        return make_filter(auth_user=value)
    if kind == "uid" and value.isdigit():
        return make_filter(uid=int(value))
    if kind == "ip":
        return make_filter(client_ip=value)
    return None


def hold_queued(home: Home, key: str) -> dict[str, Any] | None:
    """Hold every queued message of the sender `key` names (admin.act's answer), or None when
    the key names no single sender."""
    f = filter_for(key)
    if f is None:
        return None
    return admin.act(home, "hold", None, f, HOLD_REASON.format(key=key))


def hold_in_background(home: Home, key: str, log: Callable[[str], None]) -> threading.Thread:
    """hold_queued in a thread of its own: a running send service takes up to
    admin.REQUEST_WAIT_SECONDS to carry it out, and the SMTP session that found the sender
    over its limit must not wait for that. A failure is logged; the mail then goes on."""
    def work() -> None:
        try:
            hold_queued(home, key)
        except (OSError, QueueError) as exc:
            log(f"warning: the queued mail of {key} was not held: {exc}")

    thread = threading.Thread(target=work, name=f"hold {key}", daemon=True)
    thread.start()
    return thread
