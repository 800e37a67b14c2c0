"""What this process last saw of the store: whether it is down, since when, and with what error."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.store")

# After the store failed, read from the cache for this many seconds before trying it again:
# short enough to notice its return at once, long enough that a dead store is not hammered.
STORE_RETRY_SECONDS = 5.0


class StoreUnavailable(RuntimeError):
    """The store does not answer and this node has no cache to answer instead."""


def describe_error(exc: BaseException) -> str:
    """One line naming a store error: the driver's exception (not SQLAlchemy's wrapper) and
    the first line of its message. Shared by the logs, `mailyard status`, the agent's marker
    and the panel's 503."""
    inner = getattr(exc, "orig", None) or exc
    first = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {first[0] if first else ''}".strip()


# ---- the store's state, as this process last saw it ---------------------------------------------


@dataclass
class _Outage:
    since: float  # wall clock
    retry_at: float  # monotonic
    error: str


_outages: dict[str, _Outage] = {}
_outage_lock = threading.Lock()


def mark_down(home: Home, exc: BaseException, cache: Path) -> None:
    """The store just failed: remember it, and say once (naming the local cache `cache` the
    reads now go to) when an outage begins."""
    error = describe_error(exc)
    with _outage_lock:
        known = _outages.get(home.db_url)
        if known is None:
            log.warning("the store is unreachable (%s); answering from the local cache %s",
                        error, cache)
        _outages[home.db_url] = _Outage(known.since if known else time.time(),
                                        time.monotonic() + STORE_RETRY_SECONDS, error)


def mark_up(home: Home) -> None:
    """The store just answered: forget an outage, saying how long it lasted."""
    with _outage_lock:
        known = _outages.pop(home.db_url, None)
    if known is not None:
        log.warning("the store answers again after %.0f s; reading from it",
                    time.time() - known.since)


def retry_later(home: Home) -> bool:
    """Whether the store failed less than STORE_RETRY_SECONDS ago (so it is not asked now)."""
    with _outage_lock:
        known = _outages.get(home.db_url)
        return known is not None and time.monotonic() < known.retry_at


def seen_down(home: Home) -> bool:
    """Whether this process last found the store away."""
    with _outage_lock:
        return home.db_url in _outages


def outage_error(home: Home) -> str:
    """The error of the outage this process remembers, or "unreachable" when it knows none."""
    with _outage_lock:
        known = _outages.get(home.db_url)
    return known.error if known else "unreachable"
