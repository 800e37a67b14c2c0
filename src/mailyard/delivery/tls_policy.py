"""Outbound TLS policy per next hop, as Postfix's smtp_tls_policy_maps: none, may, encrypt or
verify, looked up by the route's relay or by the recipient's domain (setting send.tls_policy).

    none     never STARTTLS
    may      STARTTLS when offered, certificate not checked; clear text when it fails
    encrypt  STARTTLS required, certificate not checked; otherwise defer
    verify   STARTTLS required and the certificate must be valid for the host's name
             (send.tls_ca_file, or the system's CA store); otherwise defer

The table is separate from the SMTP routes so that their format stays exactly qmail's.
Plain functions, apart from the SSL contexts they make once.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable

LEVELS: tuple[str, ...] = ("none", "may", "encrypt", "verify")
REQUIRED = frozenset({"encrypt", "verify"})


def parse_entry(line: str) -> tuple[str, str]:
    """(next hop, level) of one send.tls_policy line, already validated by the registry."""
    key, level = line.split()
    return key.lower().rstrip("."), level.lower()


def policy_for(entries: Iterable[str], default: str, domain: str,
               relay: str | None = None) -> str:
    """The level for mail to `domain`, sent to `relay` when a route names one.

    A relay is looked up by its name alone (the next hop is the relay, not the domain). A
    domain is looked up as itself, then as `.parent` entries from the closest parent up.
    """
    table = dict(parse_entry(e) for e in entries)
    if relay is not None:
        key = relay.lower().rstrip(".")
        if key.startswith("[") and key.endswith("]"):
            key = key[1:-1]
        return table.get(key, default)
    name = domain.lower().rstrip(".")
    if name in table:
        return table[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        parent = "." + ".".join(labels[i:])
        if parent in table:
            return table[parent]
    return default


@functools.lru_cache(maxsize=1)
def unverified_context() -> ssl.SSLContext:
    """For may and encrypt: encryption against listeners, no certificate check (an
    unverifiable certificate is no reason to fall back to clear text)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=8)
def verifying_context(ca_file: str) -> ssl.SSLContext:
    """For verify: the chain must lead to a CA of `ca_file` (empty: the system's store) and
    name the host. Made once per file: loading a CA store blocks for tens of milliseconds."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def describe(version: str | None, verified: bool) -> str:
    """The line a delivery report gets about its connection's TLS."""
    if not version:
        return "TLS: none"
    return f"TLS: {version} {'verified' if verified else 'unverified'}"
