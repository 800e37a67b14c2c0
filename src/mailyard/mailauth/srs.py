"""SRS: the envelope sender of mail we forward, rewritten so that SPF still passes at the next
hop, and decoded again when a bounce comes back (the Sender Rewriting Scheme of Shevek's
paper, in the form Postfix's postsrsd and Exim write it).

    SRS0=HHHH=TT=example.net=fred@forwarder.example

HHHH is a keyed hash (HMAC-SHA1, 4 base32 characters) of the time stamp, domain and local
part, so that nobody can make us relay a bounce to an address we never forwarded for; TT is
the day (base32, modulo 1024), and an address older than MAX_AGE_DAYS is refused. Both are
base32, and compared without regard to case, because servers on the way (ours included)
may change the case of a local part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

# Days a rewritten address stays valid for its bounce: the paper's and postsrsd's 21.
MAX_AGE_DAYS = 21
HASH_LENGTH = 4
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# The time stamp counts days modulo 2^10 (two base32 characters).
_DAYS_MODULO = 1024
PREFIX = "SRS0="


class SrsError(ValueError):
    """An address that looks like SRS but is not one of ours (bad hash, too old, malformed)."""


def _day(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) // 86400) % _DAYS_MODULO


def _hash(secret: bytes, *parts: str) -> str:
    digest = hmac.new(secret, "=".join(parts).lower().encode(), hashlib.sha1).digest()
    return base64.b32encode(digest).decode()[:HASH_LENGTH]


def is_srs(address: str) -> bool:
    return address[:len(PREFIX)].upper() == PREFIX


def forward_address(sender: str, srs_domain: str, secret: bytes,
                    now: float | None = None) -> str:
    """The envelope sender for a message from `sender` that we forward. The null sender,
    our own addresses and addresses already rewritten by us stay as they are."""
    local, _, domain = sender.rpartition("@")
    if not sender or not local or domain.lower() == srs_domain.lower():
        return sender
    day = _day(now)
    stamp = _B32[day >> 5] + _B32[day & 31]
    return f"{PREFIX}{_hash(secret, stamp, domain, local)}={stamp}={domain}={local}@{srs_domain}"


def reverse(address: str, secret: bytes, now: float | None = None) -> str:
    """The original sender an SRS address of ours stands for; SrsError when it is not one."""
    local, at, _domain = address.rpartition("@")
    if not at or not is_srs(local):
        raise SrsError(f"{address!r} is not an SRS address")
    parts = local[len(PREFIX):].split("=", 3)
    if len(parts) != 4 or not all(parts):
        raise SrsError(f"{address!r} is not a well-formed SRS address")
    given, stamp, domain, original = parts
    if not hmac.compare_digest(given.upper().encode(),
                               _hash(secret, stamp, domain, original).encode()):
        raise SrsError(f"{address!r}: the hash is not one of ours")
    if len(stamp) != 2 or any(c not in _B32 for c in stamp.upper()):
        raise SrsError(f"{address!r}: bad time stamp")
    then = (_B32.index(stamp[0].upper()) << 5) | _B32.index(stamp[1].upper())
    age = (_day(now) - then) % _DAYS_MODULO
    if age > MAX_AGE_DAYS:
        raise SrsError(f"{address!r} is {age} days old (at most {MAX_AGE_DAYS})")
    return f"{original}@{domain}"
