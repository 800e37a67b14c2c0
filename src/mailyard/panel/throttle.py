"""Slowing down sign-in attempts per client address, so passwords cannot be guessed quickly.

A client may fail FREE_FAILURES times; after that each further failure makes it wait, twice as
long each time (from FIRST_WAIT_SECONDS up to MAX_WAIT_SECONDS), before it may try again. An
attempt made while waiting is refused without looking at the password. A success clears it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

FREE_FAILURES = 5
# OpenSSH's default LoginGraceTime is 120 s and fail2ban's default ban 600 s; one guess per
# 30 s, doubling, makes a dictionary attack pointless while a person who mistyped waits little.
FIRST_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 15 * 60.0
# Failures are forgotten after this long without another one.
FORGET_SECONDS = 60 * 60.0
MAX_CLIENTS = 10000


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class SigninThrottle:
    def __init__(self) -> None:
        self._clients: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        """Seconds the client must still wait before its next attempt (0: may try now)."""
        now = time.monotonic()
        with self._lock:
            rec = self._clients.get(client)
            if rec is None:
                return 0.0
            if now - rec.last > FORGET_SECONDS:
                del self._clients[client]
                return 0.0
            return max(0.0, rec.blocked_until - now)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._clients) >= MAX_CLIENTS and client not in self._clients:
                oldest = min(self._clients, key=lambda c: self._clients[c].last)
                del self._clients[oldest]
            rec = self._clients.setdefault(client, _Record())
            rec.failures += 1
            rec.last = now
            extra = rec.failures - FREE_FAILURES
            if extra > 0:
                wait = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** min(extra - 1, 20))
                rec.blocked_until = now + wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)
