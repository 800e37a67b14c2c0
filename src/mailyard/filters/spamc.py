"""Asking spamd about one message, over the spamd protocol (aiospamc), with a hard timeout.

aiospamc 1.2 speaks SPAMC/1.5 and works with SpamAssassin 4.0.1's spamd (checked by the
tests in tests/filters). Every failure — refused connection, timeout, a spamd error code, a
response we cannot parse — comes back as SpamdUnavailable, because the callers' rule is the
same for all of them: go on without a verdict rather than hold or lose mail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiospamc

# spamc refuses to pass messages over 500 KB to spamd by default (its -s option): spam is
# small, and scoring a large message costs seconds of CPU and a large Perl heap. We follow it;
# bigger messages go on unscanned, as they do behind spamc.
MAX_SCAN_BYTES = 512_000

# spamd listens on a unix socket (filters.spamd.socket_path), which is what every function
# here is given: only the mail owner's group and root may connect to it.

class SpamdUnavailable(Exception):
    """spamd did not give a verdict (down, too slow, or it answered with an error)."""


@dataclass(frozen=True)
class SpamResult:
    is_spam: bool
    score: float
    threshold: float
    message: bytes | None = None  # the processed message (PROCESS), None for CHECK


async def _call(coro_factory, timeout: float):  # type: ignore[no-untyped-def]
    try:
        return await asyncio.wait_for(coro_factory(), timeout)
    except TimeoutError as exc:
        raise SpamdUnavailable(f"spamd gave no answer within {timeout:g} s") from exc
    except Exception as exc:  # refused connection, aiospamc's errors, spamd error statuses
        raise SpamdUnavailable(f"spamd failed: {type(exc).__name__}: {exc}") from exc


def _result(response, with_body: bool) -> SpamResult:  # type: ignore[no-untyped-def]
    spam = response.headers.get("Spam") if hasattr(response.headers, "get") else None
    if spam is None:
        try:
            spam = response.headers["Spam"]
        except KeyError as exc:
            raise SpamdUnavailable("spamd answered without a Spam header") from exc
    return SpamResult(bool(spam.value), float(spam.score), float(spam.threshold),
                      bytes(response.body) if with_body else None)


async def check(socket: Path, message: bytes, timeout: float, user: str | None = None
                ) -> SpamResult:
    """Score a message (spamd CHECK) with the preferences of `user` (None: the site's)."""
    response = await _call(lambda: aiospamc.check(
        message, socket_path=Path(socket), user=user,
        timeout=aiospamc.Timeout(total=timeout)), timeout)
    return _result(response, with_body=False)


async def process(socket: Path, message: bytes, timeout: float, user: str | None = None
                  ) -> SpamResult:
    """Score a message and get it back marked as spamd marks it (spamd PROCESS)."""
    response = await _call(lambda: aiospamc.process(
        message, socket_path=Path(socket), user=user,
        timeout=aiospamc.Timeout(total=timeout)), timeout)
    result = _result(response, with_body=True)
    if not result.message:
        raise SpamdUnavailable("spamd returned an empty message")
    return result


async def ping(socket: Path, timeout: float = 5.0) -> bool:
    """True when spamd answers PING."""
    try:
        await _call(lambda: aiospamc.ping(socket_path=Path(socket),
                                          timeout=aiospamc.Timeout(total=timeout)), timeout)
    except SpamdUnavailable:
        return False
    return True


async def learn(socket: Path, message: bytes, as_spam: bool, user: str, timeout: float
                ) -> bool:
    """Teach Bayes (spamd TELL) that `message` is spam or ham, in `user`'s database (or the
    global one, when the site config points bayes_path there). True when it was learned now,
    False when that database already knew this message as such."""
    kind = "spam" if as_spam else "ham"
    response = await _call(lambda: aiospamc.tell(
        message, kind, set_action="local", socket_path=Path(socket), user=user,
        timeout=aiospamc.Timeout(total=timeout)), timeout)
    did_set = response.headers.get("DidSet") if hasattr(response.headers, "get") else None
    action = getattr(did_set, "action", did_set)
    return bool(action is not None and getattr(action, "local", False))
