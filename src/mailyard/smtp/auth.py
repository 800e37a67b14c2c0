"""The SASL exchanges of SMTP AUTH, PLAIN (RFC 4616) and LOGIN, without I/O (RFC 4954).

An exchange is started with the AUTH command's initial response and then fed each line the
client sends; every step returns what to do next: send a challenge, check credentials, or
refuse. Checking the password against the store is the driver's job (in a thread: argon2).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class Challenge:
    """Send `334 <text>`; `text` is already base64 (or empty)."""

    text: str


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Cancelled:
    """The client sent `*` (RFC 4954 4): answer 501."""


@dataclass(frozen=True)
class Malformed:
    detail: str


Step = Challenge | Credentials | Cancelled | Malformed


def _decode(text: str) -> bytes:
    if text == "=":  # RFC 4954 4: "=" is an empty initial response
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _Bad("not valid base64") from None


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(f"the {what} is not UTF-8") from None


class _Bad(ValueError):
    pass


class Exchange:
    """One AUTH exchange; subclasses implement a mechanism."""

    mechanism = ""

    def start(self, initial: str | None) -> Step:
        raise NotImplementedError

    def step(self, line: str) -> Step:
        raise NotImplementedError


class PlainExchange(Exchange):
    """PLAIN: one message `authzid NUL authcid NUL password` (RFC 4616 2)."""

    mechanism = "PLAIN"

    def start(self, initial: str | None) -> Step:
        if initial is None:
            return Challenge("")
        return self.step(initial)

    def step(self, line: str) -> Step:
        if line == "*":
            return Cancelled()
        try:
            parts = _decode(line).split(b"\0")
            if len(parts) != 3:
                raise _Bad("PLAIN needs authorization id, user name and password")
            authzid, authcid, password = (_utf8(p, "credentials") for p in parts)
        except _Bad as exc:
            return Malformed(str(exc))
        if not authcid or (authzid and authzid.lower() != authcid.lower()):
            # We never let one user act for another, so an authzid must name the same user.
            return Malformed("the authorization id must be empty or the user name")
        return Credentials(authcid, password)


class LoginExchange(Exchange):
    """LOGIN: challenge `Username:`, then `Password:` (draft-murchison-sasl-login)."""

    mechanism = "LOGIN"
    USERNAME = base64.b64encode(b"Username:").decode()
    PASSWORD = base64.b64encode(b"Password:").decode()

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: str | None) -> Step:
        if initial is None:
            return Challenge(self.USERNAME)
        return self.step(initial)

    def step(self, line: str) -> Step:
        if line == "*":
            return Cancelled()
        try:
            value = _utf8(_decode(line), "user name" if self._username is None else "password")
        except _Bad as exc:
            return Malformed(str(exc))
        if self._username is None:
            if not value:
                return Malformed("the user name is empty")
            self._username = value
            return Challenge(self.PASSWORD)
        return Credentials(self._username, value)


def start_exchange(mechanism: str) -> Exchange | None:
    """A fresh exchange for the mechanism, or None if we do not offer it."""
    if mechanism == "PLAIN":
        return PlainExchange()
    if mechanism == "LOGIN":
        return LoginExchange()
    return None
