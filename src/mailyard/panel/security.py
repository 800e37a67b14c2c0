"""Who is asking: the signed-in session or a bearer token, CSRF checks, and security headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from .sessions import COOKIE_NAME, Session, SessionStore
from .tokens import verify_token

if TYPE_CHECKING:
    from ..home import Home

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Pages and API answers are never cached (they show live state and carry the CSRF token);
# scripts and styles only come from the panel itself, and no other site may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send Origin: null
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


# Largest request body the panel reads: a test message of 100 000 characters, a long list
# setting or a bulk change fit with room to spare; anything bigger is refused unread (413).
MAX_BODY_BYTES = 1024 * 1024


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES or (
                request.headers.get("transfer-encoding") and request.method not in SAFE_METHODS):
            response = Response(f"request body too large or unreadable (at most "
                                f"{MAX_BODY_BYTES} bytes, with Content-Length)", 413)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


@dataclass(frozen=True)
class Principal:
    """Who makes a request: an admin through a session, or a script through a named token."""

    kind: str  # "session" or "token"
    name: str
    session: Session | None = None


def home_of(request: Request) -> Home:
    return request.app.state.home  # type: ignore[no-any-return]


def sessions_of(request: Request) -> SessionStore:
    return request.app.state.sessions  # type: ignore[no-any-return]


def session_of(request: Request) -> Session | None:
    return sessions_of(request).get(request.cookies.get(COOKIE_NAME))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin header)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.lower() in (f"https://{host}".lower(), f"http://{host}".lower())


def api_principal(request: Request) -> Principal:
    """FastAPI dependency of every API route: a valid bearer token, or a session (with its
    CSRF token on anything that changes state). 401 without either; 403 on a CSRF failure."""
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "use 'Authorization: Bearer TOKEN' with a token from "
                                "`mailyard api-token create NAME`",
                                headers={"WWW-Authenticate": "Bearer"})
        name = verify_token(home_of(request), token.strip())
        if name is None:
            raise HTTPException(401, "the bearer token is not valid (revoked or mistyped)",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal("token", name)
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "sign in, or send 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        if not same_origin(request):
            raise HTTPException(403, "request from another site refused (Origin mismatch)")
        if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header (CSRF check)")
    return Principal("session", session.admin, session)


# The dependency every API route declares: `who: Caller`.
Caller = Annotated[Principal, Depends(api_principal)]
