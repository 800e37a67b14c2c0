"""Which queued messages an administrator's filter picks: plain functions of the message
summaries (queue/listing.py), the filter and the time, with no file access.

A filter keeps a message when every criterion given holds:

* `sender`: the envelope sender contains the text (case-insensitive; `<>` is the null sender);
* `recipient`: some recipient contains the text (case-insensitive);
* `domain`: the sender's or some recipient's domain is the domain or below it;
* `older_than`: the message has been in the queue at least that many seconds;
* `state`: some recipient is in that state (pending, deferred, done, failed);
* `held`: the message is held (True) or not (False);
* `which`: the message has deliveries to do in that part of the queue (local, remote, todo);
* `auth_user`, `uid`, `client_ip`: who queued it, as its envelope says (the SMTP AUTH user,
  compared case-insensitively; the local user of sendmail; the client's address), exactly.
  These pick one sender's mail (limits.hold_when_over holds it with them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import QueueError

# The states of one recipient of a queued message.
RECIPIENT_STATES: tuple[str, ...] = ("pending", "deferred", "done", "failed")
WHICH_CHOICES: tuple[str, ...] = ("all", "local", "remote", "todo")
# Units of --older-than, as Postfix's time units (s, m, h, d, w).
DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*([0-9]{1,9})\s*([smhdw]?)\s*$", re.I)
# Longest filter text accepted (an address is at most 320 characters in the queue).
MAX_FILTER_TEXT = 320


@dataclass(frozen=True)
class Filter:
    sender: str | None = None
    recipient: str | None = None
    domain: str | None = None
    older_than: int | None = None  # seconds
    state: str | None = None
    held: bool | None = None
    which: str = "all"
    auth_user: str | None = None
    uid: int | None = None
    client_ip: str | None = None

    def empty(self) -> bool:
        """True when the filter picks every message (an action then needs ids)."""
        return (self.sender is None and self.recipient is None and self.domain is None
                and self.older_than is None and self.state is None and self.held is None
                and self.which == "all" and self.auth_user is None and self.uid is None
                and self.client_ip is None)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def parse_duration(text: str, *, flag: str = "--older-than") -> int:
    """Seconds in `text` such as 90, 90s, 30m, 12h, 3d, 1w; QueueError naming `flag` else."""
    m = _DURATION_RE.match(str(text))
    if not m:
        raise QueueError(f"{flag}: {text!r} is not a duration; write a number with an optional "
                         "unit s, m, h, d or w (e.g. 30m, 12h, 3d)", temporary=False)
    return int(m[1]) * DURATION_UNITS[(m[2] or "s").lower()]


def make_filter(*, sender: str | None = None, recipient: str | None = None,
                domain: str | None = None, older_than: str | int | None = None,
                state: str | None = None, held: bool | None = None,
                which: str | None = None, auth_user: str | None = None,
                uid: int | None = None, client_ip: str | None = None) -> Filter:
    """A checked Filter from the values a person gave; QueueError naming the bad one."""
    for name, value in (("sender", sender), ("recipient", recipient), ("domain", domain),
                        ("auth_user", auth_user), ("client_ip", client_ip)):
        if value is not None and len(value) > MAX_FILTER_TEXT:
            raise QueueError(f"{name}: {len(value)} characters; at most {MAX_FILTER_TEXT} are "
                             "allowed", temporary=False)
    if state is not None and state not in RECIPIENT_STATES:
        raise QueueError(f"state: {state!r} is not a recipient state; choose one of "
                         f"{', '.join(RECIPIENT_STATES)}", temporary=False)
    which = which or "all"
    if which not in WHICH_CHOICES:
        raise QueueError(f"unknown queue {which!r}; choose one of {', '.join(WHICH_CHOICES)}",
                         temporary=False)
    seconds = older_than if isinstance(older_than, int) or older_than is None \
        else parse_duration(older_than)
    if seconds is not None and seconds < 0:
        raise QueueError(f"older_than: {seconds} is negative; give a duration of 0 or more",
                         temporary=False)
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 0):
        raise QueueError(f"uid: {uid!r} is not a user id; give a whole number of 0 or more",
                         temporary=False)
    domain = domain.strip().lower().lstrip("@").rstrip(".") if domain else None
    return Filter(sender or None, recipient or None, domain or None, seconds, state, held, which,
                  auth_user.strip().lower() if auth_user else None, uid,
                  client_ip.strip() if client_ip else None)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def _in_domain(address: str, domain: str) -> bool:
    d = _domain_of(address)
    return d == domain or d.endswith("." + domain)


def matches_envelope(item: Any, f: Filter, now: float) -> bool:
    """The criteria that need only the message's envelope and directory membership (all but
    `state`): `item` has id, time, sender, recipients (addresses), held and channels."""
    if f.sender is not None:
        shown = item.sender or "<>"
        if f.sender.lower() not in shown.lower():
            return False
    if f.recipient is not None:
        needle = f.recipient.lower()
        if not any(needle in r.lower() for r in item.recipients):
            return False
    if f.domain is not None:
        if not (_in_domain(item.sender, f.domain)
                or any(_in_domain(r, f.domain) for r in item.recipients)):
            return False
    if f.older_than is not None and now - item.time < f.older_than:
        return False
    if f.held is not None and item.held != f.held:
        return False
    if f.which != "all" and f.which not in item.channels:
        return False
    if f.auth_user is not None and (item.auth_user or "").lower() != f.auth_user:
        return False
    if f.uid is not None and item.uid != f.uid:
        return False
    if f.client_ip is not None and item.client_ip != f.client_ip:
        return False
    return True


def select(items: Iterable[Any], f: Filter, now: float,
           has_state: Callable[[Any, str], bool]) -> list[Any]:
    """The items the filter keeps, in their order; `has_state(item, state)` tells whether a
    recipient of the item is in that state, and is called only when the filter asks."""
    if f.empty():
        return list(items)
    out = []
    for item in items:
        if not matches_envelope(item, f, now):
            continue
        if f.state is not None and not has_state(item, f.state):
            continue
        out.append(item)
    return out
