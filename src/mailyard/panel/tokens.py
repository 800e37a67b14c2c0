"""API tokens for scripts: made once, stored only as their SHA-256, checked on every request."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..store.db import session_scope
from ..store.models import ApiToken

if TYPE_CHECKING:
    from ..home import Home

# Every token starts with this, so a leaked one is easy to recognise in logs and code.
TOKEN_PREFIX = "myd_"
# 32 random bytes: as much as a session key; more than anyone can guess.
TOKEN_BYTES = 32
# "Last used" is written at most this often per token, so API calls do not all write the store.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class TokenError(ValueError):
    """A refused token operation; the message says which name and why."""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: datetime | None
    last_used: datetime | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise TokenError(f"token name {name!r} is not allowed; use 1 to 64 letters, digits, "
                         ". _ or -")
    return name


def create_token(home: Home, name: str) -> str:
    """Make a token called `name`; returns the token itself (it cannot be shown again)."""
    check_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with session_scope(home.db_url) as s:
        if s.scalar(select(ApiToken.id).where(ApiToken.name == name)):
            raise TokenError(f"a token named {name} exists already; revoke it first")
        s.add(ApiToken(name=name, token_sha256=_digest(token)))
    return token


def list_tokens(home: Home) -> list[TokenInfo]:
    with session_scope(home.db_url) as s:
        return [TokenInfo(t.name, t.created_at, t.last_used)
                for t in s.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(home: Home, name: str) -> None:
    with session_scope(home.db_url) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise TokenError(f"no token named {name!r}")
        s.delete(row)


def verify_token(home: Home, token: str) -> str | None:
    """The name of the token `token`, or None when it is not (or no longer) valid."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    with session_scope(home.db_url) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        now = datetime.now(UTC)
        last = row.last_used
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last is None or now - last >= LAST_USED_RESOLUTION:
            row.last_used = now
        return row.name
