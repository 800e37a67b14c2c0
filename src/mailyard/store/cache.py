"""A node's local cache of the shared store, and reads that fall back to it.

A cluster node's store is PostgreSQL on another machine. When that machine (or the way to it)
is down, the node must go on accepting, delivering and serving mail for the accounts it knew,
with the settings it had (issue 10, point 5). So every node keeps a copy of what mail needs:
domains, mailboxes, aliases, settings, spam preferences and admins, in one SQLite file,
HOME/db/cache.sqlite, with the store's own table layout.

- Kept in step by `refresh_cache`: the cluster agent calls it every heartbeat and after every
  cascaded change, `mailyard up` calls it, and so does `mailyard store refresh-cache`. One refresh is
  one SQLite transaction (tables dropped, created and filled between BEGIN IMMEDIATE and
  COMMIT), so a reader sees the whole old copy or the whole new one, never a mix; when the
  rows are what the copy already holds (a fingerprint says so), only the time is updated.
  The file stays in rollback-journal mode, so that a reader needs no write access (a WAL
  reader writes the shared-memory file).
- Dovecot cannot fall back per query (see mda/config.py), so the node switches it: whoever
  finds the store away (the agent's heartbeat, `mailyard up`) leaves the marker
  HOME/db/store-away (store/away.py) and reloads Dovecot, which then reads this cache; the
  first heartbeat that reaches the store again removes the marker and reloads Dovecot back
  onto the store.
- Read through `read_scope`: the store when it answers, else the cache. A store that failed is
  not asked again for STORE_RETRY_SECONDS (store/outage.py remembers the failure), so a dead
  store costs one connection attempt every few seconds rather than one per SMTP command.
  Writes never fall back: a change made while the store is away is refused with the store's
  error, and nothing is queued to be replayed.
- A node on SQLite (a single node; the store is a local file) needs no cache: `read_scope` is
  then just the store's session.

The copy is not a replica of PostgreSQL and takes no part in the cluster's consistency: when the
store is back, reads go to it again and the next refresh overwrites the copy. What `mailyard
status` and the panel say of the store and its cache is store/health.py's.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, Table, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .. import safefs
from ..services.privileges import mail_owner, running_as_root, store_gid
from .db import engine_for, session_scope
from .models import Admin, Alias, Domain, Mailbox, SettingRow, SpamPreference
from .outage import StoreUnavailable, mark_down, mark_up, outage_error, retry_later, seen_down

if TYPE_CHECKING:
    from ..home import Home

CACHE_NAME = "cache.sqlite"
# The tables mail needs when the store is away, parents before children (foreign keys).
CACHED_MODELS = (Domain, Mailbox, Alias, SettingRow, SpamPreference, Admin)
CACHED_TABLES: tuple[Table, ...] = tuple(cast(Table, m.__table__) for m in CACHED_MODELS)
# The cache is as private as the store: it holds password hashes.
CACHE_MODE = 0o600


def uses_cache(home: Home) -> bool:
    """Whether this node keeps a local cache: only when the store is across the network."""
    return home.db_url.startswith(("postgresql", "postgres"))


def cache_path(home: Home) -> Path:
    return home.root / "db" / CACHE_NAME


def answering_from_cache(home: Home) -> bool:
    """Whether this process last found the store away (its reads go to the cache). An address
    the cache does not know is then "try again later", never "no such user": the copy may be
    older than the mailbox."""
    return seen_down(home)


# ---- reading ------------------------------------------------------------------------------------

_cache_engines: dict[Path, Engine] = {}
_cache_lock = threading.Lock()


def _cache_engine(path: Path, *, writer: bool) -> Engine:
    """An engine on the cache file whose transactions are real SQLite transactions.

    Python's sqlite3 does not open a transaction before DDL, so the recipe from SQLAlchemy's
    SQLite notes is used: driver-level autocommit, and BEGIN (IMMEDIATE for the writer) sent by
    SQLAlchemy when a transaction starts. NullPool: a refresh replaces tables, and an idle
    pooled connection gains nothing here (reads are rare while the store is up)."""
    key = path.with_suffix(".writer" if writer else ".reader")
    with _cache_lock:
        engine = _cache_engines.get(key)
        if engine is None:
            engine = create_engine(f"sqlite:///{path}", poolclass=NullPool,
                                   connect_args={"timeout": 10})
            begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

            @event.listens_for(engine, "connect")
            def _autocommit(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                dbapi_conn.isolation_level = None

            @event.listens_for(engine, "begin")
            def _begin(conn):  # type: ignore[no-untyped-def]
                conn.exec_driver_sql(begin)

            _cache_engines[key] = engine
        return engine


def _open_primary(home: Home) -> Session | None:
    """A session on the store with its connection made, or None when the store is away."""
    if retry_later(home):
        return None
    session = sessionmaker(engine_for(home.db_url), expire_on_commit=False)()
    try:
        session.connection()
    except DBAPIError as exc:
        session.close()
        mark_down(home, exc, cache_path(home))
        return None
    mark_up(home)
    return session


@contextmanager
def read_scope(home: Home) -> Iterator[Session]:
    """A session for reading: on the store when it answers, else on this node's cache.

    Only for reads: what is written in a cache session is thrown away."""
    if not uses_cache(home):
        with session_scope(home.db_url) as session:
            yield session
        return
    primary = _open_primary(home)
    if primary is not None:
        try:
            yield primary
            primary.commit()
        except BaseException:
            primary.rollback()
            raise
        finally:
            primary.close()
        return
    path = cache_path(home)
    if not path.is_file():
        raise StoreUnavailable(f"the store is unreachable ({outage_error(home)}) and this node "
                               f"has no local cache yet ({path})")
    session = sessionmaker(_cache_engine(path, writer=False), expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()  # ends the read transaction; unlike rollback() it keeps loaded rows


# ---- keeping the cache in step --------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    refreshed_at: datetime | None
    mailboxes: int
    domains: int


def refresh_cache(home: Home) -> CacheInfo | None:
    """Copy what mail needs from the store into this node's cache, in one transaction.

    Raises the store's error when it cannot be read (the old copy then stays as it was).
    None for a node whose store is a local SQLite file."""
    if not uses_cache(home):
        return None
    with engine_for(home.db_url).connect() as source:
        rows = {t.name: [dict(r) for r in source.execute(select(t)).mappings()]
                for t in CACHED_TABLES}
    path = cache_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, CACHE_MODE))
    # Also for a file made by someone else first: the services that read it run as the mail
    # owner.
    os.chmod(path, CACHE_MODE)
    _give_to_mail_owner(home, path)
    now = datetime.now(UTC)
    digest = _digest(rows)
    with _cache_engine(path, writer=True).begin() as conn:
        if _stored_digest(conn) == digest:  # nothing changed: only say when it was checked
            conn.execute(text("UPDATE cache_meta SET value = :at WHERE name = 'refreshed_at'"),
                         {"at": now.isoformat()})
            return CacheInfo(path, now, len(rows["mailboxes"]), len(rows["domains"]))
        for table in reversed(CACHED_TABLES):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}"')
        conn.exec_driver_sql("DROP TABLE IF EXISTS cache_meta")
        for table in CACHED_TABLES:
            table.create(conn)
        conn.exec_driver_sql("CREATE TABLE cache_meta (name TEXT PRIMARY KEY, value TEXT)")
        for table in CACHED_TABLES:
            if rows[table.name]:
                conn.execute(table.insert(), rows[table.name])
        conn.execute(text("INSERT INTO cache_meta VALUES ('refreshed_at', :at), "
                          "('node', :node), ('digest', :digest)"),
                     {"at": now.isoformat(), "node": home.node_name, "digest": digest})
    return CacheInfo(path, now, len(rows["mailboxes"]), len(rows["domains"]))


def _digest(rows: dict[str, list[dict[str, Any]]]) -> str:
    """A fingerprint of the copied rows (and of the tables' layout, so that an upgrade that
    changes a table rebuilds the copy)."""
    layout = [(t.name, [c.name for c in t.columns]) for t in CACHED_TABLES]
    return hashlib.sha256(repr((layout, rows)).encode("utf-8", "surrogatepass")).hexdigest()


def _stored_digest(conn: Any) -> str | None:
    try:
        digest: str | None = conn.execute(
            text("SELECT value FROM cache_meta WHERE name = 'digest'")).scalar()
        return digest
    except DBAPIError:
        return None  # a new file, or one from before digests


# HOME/db and its files as nodeinit.secure_home leaves them (STORE_DIR_MODE, STORE_FILE_MODE
# there): the SMTP and send services and the panel read the cache after dropping root.
CACHE_DIR_MODE = 0o2770
CACHE_FILE_MODE = 0o660


def _give_to_mail_owner(home: Home, path: Path) -> None:
    """The cache file is the mail owner's, in the store's group; HOME/db is root's, 2770
    root:mailyard-store (changed without following a link: HOME is root's)."""
    if not running_as_root():
        return
    gid = store_gid()
    safefs.chown(path.parent.parent, path.parent.name, 0, gid, mode=CACHE_DIR_MODE)
    safefs.chmod_file(path.parent.parent, f"{path.parent.name}/{path.name}", CACHE_FILE_MODE,
                      (mail_owner()[0], gid))


def cache_info(home: Home) -> CacheInfo | None:
    """What the cache holds and when it was last refreshed; None when there is none."""
    path = cache_path(home)
    if not uses_cache(home) or not path.is_file():
        return None
    try:
        with _cache_engine(path, writer=False).connect() as conn:
            at = conn.execute(text("SELECT value FROM cache_meta WHERE name = 'refreshed_at'")
                              ).scalar()
            boxes = conn.execute(select(func.count()).select_from(Mailbox.__table__)).scalar()
            domains = conn.execute(select(func.count()).select_from(Domain.__table__)).scalar()
    except DBAPIError:
        return CacheInfo(path, None, 0, 0)  # being written for the first time, or damaged
    return CacheInfo(path, datetime.fromisoformat(at) if at else None, int(boxes or 0),
                     int(domains or 0))
