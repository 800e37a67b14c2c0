"""Slowing down sign-in attempts per client address, so passwords cannot be guessed quickly,
and capping how many passwords are checked at once.

A client may fail FREE_FAILURES times; after that each further failure makes it wait, twice as
long each time (from FIRST_WAIT_SECONDS up to MAX_WAIT_SECONDS), before it may try again. An
attempt made while waiting is refused without looking at the password. A success clears it.

Every check costs argon2's 64 MiB (store/passwords.py). At most MAX_CONCURRENT_PASSWORD_CHECKS
run at once; a sign-in that finds them all busy is answered 503 with Retry-After at once,
without looking at its password, instead of a burst exhausting the panel's memory limit (the
check that cannot get its memory would fail, and the real administrator could not sign in).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# The panel's default memory limit is 512 MB of address space (service.panel.memory_limit_mb),
# of which the interpreter, its libraries and the request threads reserve the most; two
# 64 MiB argon2 checks fit beside them. Dovecot caps its own checks by its auth-worker count
# (mda/config.py AUTH_WORKERS).
MAX_CONCURRENT_PASSWORD_CHECKS = 2
# What a sign-in refused for a full gate is told to wait: one check takes a fraction of this.
BUSY_RETRY_SECONDS = 2

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


class PasswordCheckGate:
    """At most `limit` password checks at once in this process; the rest are turned away."""

    def __init__(self, limit: int = MAX_CONCURRENT_PASSWORD_CHECKS) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """True (and a slot held until the block ends) when a check may run now."""
        got = self._slots.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._slots.release()
