"""Open SMTP connections kept for the next message to the same next hop (Postfix's connection
cache): a session that just finished a transaction waits a moment for another one.

Keyed by next hop, port and TLS policy, so a session opened under one policy is never handed
to mail that needs another (a clear-text or unverified session never carries mail whose
policy says verify). Only the event loop touches it; no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

# How long an idle session waits for more mail: Postfix's smtp_connection_cache_time_limit.
IDLE_SECONDS = 2.0
# How long one session may be reused at all: Postfix's smtp_connection_reuse_time_limit.
REUSE_SECONDS = 300.0
# Idle sessions kept per key; a burst to one destination opens more, and the extra ones close.
MAX_IDLE_PER_KEY = 20

S = TypeVar("S")
Key = tuple[str, int, str]  # (next hop, port, TLS policy level)


@dataclass
class _Idle(Generic[S]):
    session: S
    host: object
    opened: float
    idle_since: float


class ConnectionCache(Generic[S]):
    """Idle sessions by key; `close` is how a session is closed (QUIT, then the socket)."""

    def __init__(self, close: Callable[[S], Awaitable[None]],
                 alive: Callable[[S], bool]) -> None:
        self._close = close
        self._alive = alive
        self._idle: dict[Key, list[_Idle[S]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: Key) -> tuple[S, object, float] | None:
        """An idle session for `key` (with its host and opening time), or None."""
        now = time.monotonic()
        entries = self._idle.get(key, [])
        while entries:
            entry = entries.pop()
            if self._alive(entry.session) and now - entry.opened < REUSE_SECONDS:
                return entry.session, entry.host, entry.opened
            self._close_later(entry.session)
        self._idle.pop(key, None)
        return None

    def put(self, key: Key, session: S, host: object, opened: float) -> None:
        now = time.monotonic()
        entries = self._idle.setdefault(key, [])
        if len(entries) >= MAX_IDLE_PER_KEY or now - opened >= REUSE_SECONDS:
            self._close_later(session)
            return
        entries.append(_Idle(session, host, opened, now))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for key in list(self._idle):
            keep = []
            for entry in self._idle[key]:
                if now - entry.idle_since >= IDLE_SECONDS or not self._alive(entry.session):
                    self._close_later(entry.session)
                else:
                    keep.append(entry)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._sweep)

    def _close_later(self, session: S) -> None:
        task = asyncio.ensure_future(self._close(session))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for entries in self._idle.values():
            for entry in entries:
                self._close_later(entry.session)
        self._idle.clear()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=5)
