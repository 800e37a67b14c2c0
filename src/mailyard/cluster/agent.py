"""The node's cluster agent: heartbeat into the store, and prompt re-application of cascades.

One loop per node. It LISTENs on the store's `mailyard_settings` channel (psycopg 3), so a
cascaded change made on any node wakes it at once; it also checks for pending changes every
heartbeat, which covers a lost connection or a NOTIFY sent while it was away. On start it
applies whatever was cascaded while the node was down.

It runs inside the panel process: the panel already runs on every node and keeps an event loop
for its sampler. The panel runs as mailyard-panel, so what needs root (reading Dovecot's state,
reloads) goes through the node's root helper (services/helper.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from ..services import helper
from ..store.away import mark_store_away
from ..store.cache import refresh_cache
from ..store.outage import describe_error
from ..store.settings_store import NOTIFY_CHANNEL
from .changes import apply_pending
from .membership import HEARTBEAT_SECONDS, report_status

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.cluster")

# Seconds before a lost LISTEN connection is tried again.
RECONNECT_SECONDS = 5.0


def conninfo(db_url: str) -> str:
    """The store URL as libpq takes it (no SQLAlchemy driver suffix)."""
    scheme, _, rest = db_url.partition("://")
    return "postgresql://" + rest if scheme.startswith("postgres") else db_url


def run_once(home: Home) -> None:
    """One heartbeat: report status, apply pending changes, refresh the local cache. Errors
    are logged, not raised: the agent must outlive a store that is away.

    A heartbeat that cannot reach the store switches the node's Dovecot to the local cache
    (store.away.mark_store_away, then a reload); the first one that reaches it again is the
    catch-up: the changes cascaded meanwhile are applied, the cache is refreshed, and Dovecot
    goes back to the store."""
    try:
        member = report_status(home)
    except DBAPIError as exc:  # the store's driver failed: it is away
        if mark_store_away(home, True, describe_error(exc)):
            log.warning("the store is away (%s); Dovecot now reads the local cache",
                        describe_error(exc))
            _reload_dovecot(home)
        return
    except Exception as exc:  # our own trouble, not the store's: keep Dovecot where it is
        log.warning("cluster heartbeat failed: %s: %s", type(exc).__name__, exc)
        return
    try:
        if member:
            _apply(home)
    except Exception as exc:
        log.warning("applying cascaded changes failed: %s", exc)
    _refresh(home)
    if mark_store_away(home, False):
        log.warning("the store is back; caught up, and Dovecot reads the store again")
        _reload_dovecot(home)


def _reload_dovecot(home: Home) -> None:
    """Re-render Dovecot's configuration and reload it (one Dovecot serves all four
    listeners), when it runs."""
    try:  # through the root helper when it runs (the agent runs in the unprivileged panel)
        running = {s.name for s in helper.status_or_local(home, with_versions=False)
                   if s.state == "RUNNING"}
        for name in ("imap", "imaps", "pop3", "pop3s"):
            if name in running:
                helper.service_or_local(home, "reload", name)
                break
    except Exception as exc:
        log.warning("could not reload Dovecot: %s", exc)


def _apply(home: Home) -> None:
    applied = apply_pending(home)
    if applied.change_ids:
        log.info("applied cascaded changes %s: reloaded %s%s", applied.change_ids,
                 ", ".join(applied.reloaded) or "nothing",
                 f"; problems: {'; '.join(applied.problems)}" if applied.problems else "")


def _refresh(home: Home) -> None:
    """Keep the node's local cache of the store in step (what it works from while the store
    is away; see mailyard.store.cache). A failure keeps the previous copy."""
    try:
        refresh_cache(home)
    except Exception as exc:
        log.warning("cannot refresh the local cache of the store: %s", exc)


def run_agent(home: Home, stop: threading.Event,
              heartbeat: float = HEARTBEAT_SECONDS) -> None:
    """Run until `stop` is set: a heartbeat every `heartbeat` seconds, and pending changes
    applied as soon as a NOTIFY arrives (or at the next heartbeat without one)."""
    import psycopg

    listen = home.db_url.startswith(("postgresql", "postgres"))
    conn: psycopg.Connection | None = None
    next_beat = 0.0
    next_connect = 0.0
    said_cannot_listen = False
    while not stop.is_set():
        if listen and conn is None and time.monotonic() >= next_connect:
            try:
                conn = psycopg.connect(conninfo(home.db_url), autocommit=True,
                                       connect_timeout=10)
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                next_beat = 0.0  # catch up on what was announced while not listening
                said_cannot_listen = False
            except psycopg.Error as exc:
                if not said_cannot_listen:
                    log.warning("cannot LISTEN on the store (%s); trying every %ss", exc,
                                RECONNECT_SECONDS)
                    said_cannot_listen = True
                conn = None
                next_connect = time.monotonic() + RECONNECT_SECONDS
        now = time.monotonic()
        if now >= next_beat:
            run_once(home)
            next_beat = time.monotonic() + heartbeat
        # Wait for a NOTIFY, the next heartbeat, or at most a second (to notice `stop`).
        wait = max(0.05, min(1.0, next_beat - time.monotonic()))
        if conn is None:
            stop.wait(wait)
            continue
        try:
            notified = False
            for _ in conn.notifies(timeout=wait, stop_after=1):
                notified = True
            if notified:
                try:
                    _apply(home)
                except Exception as exc:
                    log.warning("applying cascaded changes failed: %s", exc)
                _refresh(home)
        except psycopg.Error as exc:
            log.warning("lost the LISTEN connection to the store: %s", exc)
            try:
                conn.close()
            except psycopg.Error:
                pass
            conn = None
            next_beat = 0.0  # a heartbeat now finds out whether the store itself is away
    if conn is not None:
        conn.close()


def start_thread(home: Home, heartbeat: float = HEARTBEAT_SECONDS
                 ) -> tuple[threading.Thread, threading.Event]:
    """Run the agent in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_agent, args=(home, stop, heartbeat),
                              name=f"mailyard-cluster-{home.node_name}", daemon=True)
    thread.start()
    return thread, stop
