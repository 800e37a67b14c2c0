"""DKIM signatures (RFC 6376) for mail this node sends on behalf of a local domain.

dkimpy does the canonicalisation and the cryptography; this module decides which headers a
signature covers and which domain signs (`signing_domain`, a plain function of the facts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dkim

from ..store.dkim_keys import SigningKey

# The headers a signature covers when present (RFC 6376 5.4.1's list of those that carry the
# message's meaning). From is signed once more than it occurs ("over-signing", RFC 6376 8.15):
# a receiver then sees any From added later as a broken signature.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"reply-to", b"subject", b"date", b"to", b"cc", b"message-id", b"in-reply-to",
    b"references", b"mime-version", b"content-type", b"content-transfer-encoding",
    b"content-disposition", b"list-unsubscribe", b"list-unsubscribe-post",
)
_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


class SigningError(RuntimeError):
    """The message could not be signed (a key dkimpy refuses, a message it cannot parse)."""


def header_names(message: bytes) -> list[bytes]:
    """The lowercased names of the header fields, in order (up to the first empty line)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end + 2]
    return [m.group(1).lower() for m in _HEADER_NAME.finditer(head)]


def headers_to_sign(message: bytes) -> list[bytes]:
    present = header_names(message)
    chosen = [name for name in SIGNED_HEADERS for _ in range(present.count(name))]
    return chosen + [b"from"]  # over-sign From


def sign(message: bytes, keys: Iterable[SigningKey]) -> bytes:
    """DKIM-Signature header fields (CRLF-terminated, one per key) to put above `message`."""
    include = headers_to_sign(message)
    out = b""
    for key in keys:
        try:
            out += dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private_pem,
                             canonicalize=(b"relaxed", b"relaxed"),
                             signature_algorithm=_ALGORITHM[key.algorithm],
                             include_headers=include, linesep=b"\r\n")
        except dkim.DKIMException as exc:
            raise SigningError(f"DKIM signing for {key.domain} (selector {key.selector}) "
                               f"failed: {exc}") from exc
    return out


def from_domain(message: bytes) -> str | None:
    """The domain of the single address in the From header, lowercased; None if there is
    not exactly one From field with one address (RFC 7489 6.6.1 treats those as unsignable)."""
    end = message.find(b"\r\n\r\n")
    head = (message if end < 0 else message[:end + 2]).decode("utf-8", "replace")
    fields = re.findall(r"^from[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.IGNORECASE | re.MULTILINE)
    if len(fields) != 1:
        return None
    value = re.sub(r"\([^()]*\)", "", fields[0].replace("\r\n", ""))  # comments out
    value = re.sub(r'"(?:[^"\\]|\\.)*"', '""', value)  # quoted display names out
    addresses = re.findall(r"[^\s<>,;:@]+@([A-Za-z0-9.-]+)", value)
    if len(addresses) != 1:
        return None
    return str(addresses[0]).rstrip(".").lower()


def signing_domain(from_header_domain: str | None, authenticated: bool,
                   allowed_domains: Iterable[str]) -> str | None:
    """The domain to sign for, or None: only mail whose sender proved who it is (an SMTP login,
    a local program) and whose From domain that sender may use is signed, so that a customer
    can never get a signature for another customer's domain."""
    if not authenticated or from_header_domain is None:
        return None
    return from_header_domain if from_header_domain in set(allowed_domains) else None
