"""Signed-in sessions of the panel: random ids kept in the panel's memory, each with its CSRF token.

Sessions live only in the panel process: restarting the panel signs everybody out, and
signing out really ends a session (nothing valid is left in a cookie).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

# The cookie's name: the __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
COOKIE_NAME = "__Host-mailyard_session"
# Cookie of the sign-in form (a CSRF token before there is a session).
SIGNIN_COOKIE_NAME = "__Host-mailyard_signin"
# A session ends after this much inactivity, and in any case after the absolute lifetime.
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 60 * 60
# More live sessions than this and the oldest are dropped (memory stays bounded).
MAX_SESSIONS = 1000


@dataclass
class Session:
    sid: str
    admin: str
    csrf: str
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) for the next page

    def csrf_matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf, str(given))


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, admin: str) -> Session:
        session = Session(sid=secrets.token_urlsafe(32), admin=admin,
                          csrf=secrets.token_urlsafe(32))
        with self._lock:
            self._expire()
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                del self._sessions[oldest.sid]
            self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            now = time.monotonic()
            if now - session.seen > IDLE_SECONDS or now - session.created > ABSOLUTE_SECONDS:
                del self._sessions[sid]
                return None
            session.seen = now
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid, s in list(self._sessions.items()):
            if now - s.seen > IDLE_SECONDS or now - s.created > ABSOLUTE_SECONDS:
                del self._sessions[sid]
