"""Trust between nodes: the manager trusts exactly the certificate a node recorded in the store.

Each node writes its own TLS certificate (HOME/tls/cert.pem) into its row of `nodes` at init,
join and every heartbeat. When the manager calls a node's API it builds a client context that
trusts that one certificate and nothing else: no public CA, no system store. This works the same
for the self-signed certificate `mailyard init` makes and for a certificate from a real CA, and
a node's address may be an IP address or a name its certificate does not carry.
"""

from __future__ import annotations

import re
import ssl

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")

# The same floor as the node's own servers (mailyard.services.server_tls.server_context).
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


class TrustError(ValueError):
    """No certificate to pin: the node has not recorded one, or what it recorded is not PEM."""


def leaf_certificate(pem: str) -> str:
    """The first certificate of a PEM file: the node's own, before any chain.

    Only the leaf is pinned. A cert.pem from a public CA usually carries the CA's intermediate
    after the leaf; trusting that intermediate as well, with host names unchecked, would accept
    any certificate the CA ever issued to anyone."""
    match = _PEM_CERTIFICATE.search(pem or "")
    if match is None:
        raise TrustError("no PEM certificate recorded for this node")
    return match.group(0) + "\n"


def pinned_context(pem: str) -> ssl.SSLContext:
    """A TLS client context that accepts exactly the node's recorded certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer: CERT_REQUIRED
    ctx.minimum_version = MINIMUM_TLS
    try:
        ctx.load_verify_locations(cadata=leaf_certificate(pem))
    except ssl.SSLError as exc:
        raise TrustError(f"the certificate recorded for this node cannot be read: {exc}") \
            from None
    # The pinned certificate is the trust anchor itself, even when it is a leaf issued by a CA
    # (not self-signed): without PARTIAL_CHAIN OpenSSL would insist on reaching a root.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # Host names are not checked: the pin is stricter than a name check (only this one
    # certificate passes), and a node's address may be an IP address or an internal name
    # that its certificate, made for its public mail hostname, does not list.
    ctx.check_hostname = False
    return ctx
