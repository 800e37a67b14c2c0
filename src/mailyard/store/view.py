"""An in-process view of the store's mail routing facts: domains, mailboxes, aliases.

SMTP asks about every recipient (is the domain ours, does the mailbox exist, is it active) and,
soon, about every signed-in sender (own address, aliases, the domains of an owner). Asking the
store each time costs an ORM session and a query per RCPT; this view answers from memory and
is rebuilt, in one read of three tables, when the store has changed:

- SQLite (one node): `PRAGMA data_version` on a connection of the view's own changes whenever
  another connection (any process) committed a change to the file. Checking it costs a few
  microseconds; a check holds for VERSION_RECHECK (5 ms), so the questions of one message
  share it, and the view is never older than the store by more than that: a mailbox created
  a second ago is found.
- PostgreSQL (a cluster): the store does not announce account changes, so the view counts as
  current for POSITIVE_MAX_AGE seconds, and a "no" (no such domain, no such mailbox) older
  than NEGATIVE_MAX_AGE seconds is asked again (the view is rebuilt first). The rebuild reads
  through `read_scope`, so while the store is away it comes from the node's local cache, and
  `answering_from_cache` tells the caller to answer "try again later" for an unknown address.

The view holds no password hashes: AUTH still asks the store (argon2 is the cost there anyway).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from .cache import read_scope, uses_cache
from .models import Alias, Domain, Mailbox

if TYPE_CHECKING:
    from ..home import Home

# A "no" may be at most this old before the store is asked again (issue 14: a mailbox created
# a second ago must be found). Only used where the store cannot tell us it changed (PostgreSQL).
NEGATIVE_MAX_AGE = 1.0
# A "yes" (and the rest of the view) is rebuilt after this long on PostgreSQL: a deleted or
# disabled mailbox is noticed within this time. Postfix's proxymap caches nothing, its
# address_verify cache keeps positives for days; we stay far below either kind of staleness.
POSITIVE_MAX_AGE = 10.0
# On SQLite, a check of `data_version` that found the view current holds for this long: the
# recipient, quota and sender questions of one message come within it, so they share one
# check (a query on the store's file) instead of making one each. A change is still seen
# within this long, against the second that NEGATIVE_MAX_AGE allows elsewhere.
VERSION_RECHECK = 0.005


@dataclass(frozen=True)
class MailboxFacts:
    address: str
    active: bool
    quota_mb: int  # 0 means no quota
    messages_per_hour: int | None = None  # its own outbound limit; None: the node's


@dataclass(frozen=True)
class AliasFacts:
    source: str
    targets: tuple[str, ...]
    keep_copy: bool


@dataclass(frozen=True)
class RecipientFacts:
    """What the store says about one address (all lower case)."""

    domain_local: bool
    mailbox: MailboxFacts | None
    alias: AliasFacts | None
    domain_owner: str = ""  # the system user owning the domain, "" when none or not ours

    @property
    def exists(self) -> bool:
        """A mailbox (active or not) or an alias with exactly this address."""
        return self.mailbox is not None or self.alias is not None


@dataclass
class Snapshot:
    """The routing facts as one read of the store found them."""

    domains: dict[str, str] = field(default_factory=dict)  # name -> owner
    mailboxes: dict[str, MailboxFacts] = field(default_factory=dict)
    aliases: dict[str, AliasFacts] = field(default_factory=dict)
    # address -> alias sources whose targets include it (for "may send as")
    aliases_to: dict[str, tuple[str, ...]] = field(default_factory=dict)
    owners: dict[str, tuple[str, ...]] = field(default_factory=dict)  # owner -> domains

    def recipient(self, address: str) -> RecipientFacts:
        key = address.strip().lower()
        domain = key.rpartition("@")[2]
        owner = self.domains.get(domain)
        return RecipientFacts(domain_local=owner is not None, mailbox=self.mailboxes.get(key),
                              alias=self.aliases.get(key), domain_owner=owner or "")


def read_snapshot(home: Home) -> Snapshot:
    """Read the three tables once (through `read_scope`: the cache while the store is away)."""
    snap = Snapshot()
    with read_scope(home) as s:
        for name, owner in s.execute(select(Domain.name, Domain.owner)):
            snap.domains[name.lower()] = owner or ""
        for address, active, quota, rate in s.execute(
                select(Mailbox.address, Mailbox.active, Mailbox.quota_mb,
                       Mailbox.messages_per_hour)):
            key = address.lower()
            snap.mailboxes[key] = MailboxFacts(key, bool(active), int(quota or 0),
                                               None if rate is None else int(rate))
        for source, targets, keep in s.execute(
                select(Alias.source, Alias.targets, Alias.keep_copy)):
            key = source.lower()
            clean = tuple(t.strip().lower() for t in targets.splitlines() if t.strip())
            snap.aliases[key] = AliasFacts(key, clean, bool(keep))
    back: dict[str, list[str]] = {}
    for alias in snap.aliases.values():
        for target in alias.targets:
            back.setdefault(target, []).append(alias.source)
    snap.aliases_to = {k: tuple(v) for k, v in back.items()}
    owned: dict[str, list[str]] = {}
    for name, owner in snap.domains.items():
        if owner:
            owned.setdefault(owner, []).append(name)
    snap.owners = {k: tuple(sorted(v)) for k, v in owned.items()}
    return snap


class SqliteVersion:
    """`PRAGMA data_version` of an SQLite store, on a connection kept for just this."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            if self._conn is None:
                # check_same_thread off: the view is read on the event loop and rebuilt in a
                # worker thread; the lock keeps the two apart.
                self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            row = self._conn.execute("PRAGMA data_version").fetchone()
            return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def sqlite_path(db_url: str) -> str | None:
    """The file of an sqlite:/// URL, None for any other store."""
    prefix = "sqlite:///"
    if db_url.startswith(prefix) and db_url[len(prefix):] not in ("", ":memory:"):
        return db_url[len(prefix):]
    return None


class StoreView:
    """The current `Snapshot`, rebuilt when the store changed (see the module's docstring).

    `current()` answers without touching the store when the view is known current; when it is
    not, `stale()` is true and the caller rebuilds with `refresh()` (in a thread: it reads the
    store)."""

    def __init__(self, home: Home, *, version: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        path = None if uses_cache(home) else sqlite_path(home.db_url)
        self._version = version or (SqliteVersion(path) if path else None)
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._seen_version: int | None = None
        self._built_at = 0.0
        self._current_until = 0.0  # clock time until which the last version check holds
        self._lock = threading.Lock()
        self.rebuilds = 0  # how many times the tables were read (for tests and status)

    @property
    def exact(self) -> bool:
        """Whether the store tells us of every change (SQLite): no answer is ever stale."""
        return self._version is not None

    def stale(self, negative: bool = False) -> bool:
        """Whether the view must be rebuilt before answering (`negative`: the answer would
        be a "no", which is trusted for less long where changes are not announced)."""
        if self._snapshot is None:
            return True
        if self._version is not None:
            now = self._clock()
            if now < self._current_until:
                return False
            if self._version() != self._seen_version:
                return True
            self._current_until = now + VERSION_RECHECK
            return False
        age = self._clock() - self._built_at
        return age > (NEGATIVE_MAX_AGE if negative else POSITIVE_MAX_AGE)

    def refresh(self) -> Snapshot:
        """Read the store now (blocking) and make that the view."""
        with self._lock:
            # The version is read before the tables: a change committed in between makes the
            # next check see a newer version and read again, never miss it.
            version = self._version() if self._version is not None else None
            built_at = self._clock()
            snapshot = read_snapshot(self.home)
            self._snapshot, self._seen_version, self._built_at = snapshot, version, built_at
            self._current_until = 0.0  # the next question checks the version again
            self.rebuilds += 1
            return snapshot

    def current(self) -> Snapshot:
        """The view as it is (rebuilding it first if there is none)."""
        return self._snapshot if self._snapshot is not None else self.refresh()

    def close(self) -> None:
        if isinstance(self._version, SqliteVersion):
            self._version.close()
