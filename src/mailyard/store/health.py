"""The store's health for `mailyard status` and the panel: reachable or not, and the cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from .cache import CacheInfo, cache_info, cache_path, uses_cache
from .db import engine_for
from .outage import describe_error, mark_down, mark_up, outage_error, retry_later

if TYPE_CHECKING:
    from ..home import Home


@dataclass(frozen=True)
class StoreHealth:
    kind: str  # "sqlite" or "postgresql"
    reachable: bool
    error: str
    cache: CacheInfo | None

    def as_dict(self) -> dict[str, Any]:
        cache = None
        if self.cache is not None:
            cache = {"path": str(self.cache.path), "mailboxes": self.cache.mailboxes,
                     "domains": self.cache.domains,
                     "refreshed_at": (self.cache.refreshed_at.isoformat()
                                      if self.cache.refreshed_at else None)}
        return {"kind": self.kind, "reachable": self.reachable, "error": self.error,
                "cache": cache}

    def summary(self) -> str:
        """One line for people: is the store there, and if not what the node works from."""
        if self.reachable:
            return f"store: {self.kind}, reachable"
        where = "no local cache: mail for accounts cannot be checked, senders are told to " \
                "try again later"
        if self.cache is not None and self.cache.refreshed_at is not None:
            age = int((datetime.now(UTC) - self.cache.refreshed_at).total_seconds())
            stamp = f"{self.cache.refreshed_at:%Y-%m-%d %H:%M:%S}"
            where = (f"working from the local cache of {stamp} UTC ({_age(age)} old; "
                     f"{self.cache.mailboxes} mailboxes, "
                     f"{self.cache.domains} domains); changes are refused until it is back")
        return f"store: {self.kind}, UNREACHABLE ({self.error}); {where}"


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{max(0, seconds)} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def store_health(home: Home) -> StoreHealth:
    """Ask the store now (one connection, bounded by the connect timeout)."""
    kind = "postgresql" if uses_cache(home) else "sqlite"
    try:
        with engine_for(home.db_url).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError as exc:
        mark_down(home, exc, cache_path(home))
        return StoreHealth(kind, False, describe_error(exc), cache_info(home))
    mark_up(home)
    return StoreHealth(kind, True, "", cache_info(home))


def recent_health(home: Home) -> StoreHealth:
    """Like store_health, but a store this process saw fail moments ago is not asked again
    until STORE_RETRY_SECONDS (store/outage.py) have passed (a page view must not wait for a
    dead store)."""
    if not uses_cache(home):
        return StoreHealth("sqlite", True, "", None)
    if retry_later(home):
        return StoreHealth("postgresql", False, outage_error(home), cache_info(home))
    return store_health(home)
