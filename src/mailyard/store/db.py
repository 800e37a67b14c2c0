"""Connecting to a node's store (SQLite in WAL mode, or PostgreSQL) and migrating it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_ENGINES: dict[str, Engine] = {}

# How long an SQLite writer waits for another process's lock before failing, in ms. Several
# services (smtp, send, panel, Dovecot) share the file; writes are short.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long a connection to a PostgreSQL store may take before it counts as unreachable, in s.
# Without it a store host that silently drops packets would hold an SMTP session for minutes;
# with it the node turns to its local cache (store/cache.py) after this long.
PG_CONNECT_TIMEOUT_SECONDS = 5


def normalise_url(url: str) -> str:
    """Let administrators write postgresql://… ; we talk to it through psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def engine_for(url: str) -> Engine:
    url = normalise_url(url)
    engine = _ENGINES.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA synchronous=FULL")
                cur.close()
        else:
            engine = create_engine(url, pool_pre_ping=True,
                                   connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS})
        _ENGINES[url] = engine
    return engine


def dispose_all() -> None:
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def forget_engines_after_fork() -> None:
    """In a forked child: drop the parent's engines without closing their connections, which
    stay the parent's (SQLAlchemy's advice for os.fork); the child opens its own."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends normally, rolled back otherwise."""
    factory = sessionmaker(engine_for(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
