"""The TLS contexts the node's servers answer with: its own certificate and, chosen by SNI, a
hosted domain's (`mailyard tls install --domain`, services/certificates.py).

The SMTP services import this at start, so it needs only the ssl module there: cryptography
(about 3 MiB in each SMTP service, issue 20) is loaded only to read the names of a hosted
domain's certificate, on a node that has one. Making and checking certificates, which needs
cryptography throughout, is services/tls.py and services/certificates.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

# Where per-domain certificates live under HOME/tls/.
DOMAINS_DIR = "domains"
CERT_NAME, KEY_NAME = "cert.pem", "key.pem"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context with the node's certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its SAN, or its CN when it has no SAN."""
    # Whoever holds a parsed certificate has loaded cryptography already; imported here so
    # that the servers' start does not load it (see the module's docstring).
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)]


def _leaf_names(pem: bytes) -> list[str]:
    """cert_names of the first certificate of a PEM file."""
    # Only for a hosted domain's own certificate (see the module's docstring).
    from cryptography import x509

    return cert_names(x509.load_pem_x509_certificates(pem)[0])


def sni_context(base: ssl.SSLContext, tls_dir: Path) -> ssl.SSLContext:
    """`base` (the node's certificate) answering each client that names a hosted domain
    with that domain's certificate (RFC 6066 3), and every other client with the node's."""
    contexts: dict[str, ssl.SSLContext] = {}
    domains = tls_dir / DOMAINS_DIR
    if domains.is_dir():
        for where in sorted(domains.iterdir()):
            if not (where / CERT_NAME).is_file():
                continue
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = base.minimum_version
            ctx.load_cert_chain(str(where / CERT_NAME), str(where / KEY_NAME))
            for name in _leaf_names((where / CERT_NAME).read_bytes()):
                contexts.setdefault(name, ctx)

    def choose(sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
               _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower()
        chosen = contexts.get(name) or contexts.get("*." + name.partition(".")[2])
        if chosen is not None:
            sock.context = chosen

    if contexts:
        base.sni_callback = choose
    return base
