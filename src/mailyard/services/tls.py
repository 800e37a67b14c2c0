"""The node's self-signed certificate, made at init (the servers' contexts: server_tls.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Ten years: a self-signed certificate is replaced by a real one, not renewed.
SELF_SIGNED_DAYS = 3650


def make_self_signed(cert_file: Path, key_file: Path, hostname: str) -> None:
    """Write a P-256 key and a certificate for `hostname`, localhost and loopback addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(hostname), x509.DNSName("localhost"),
           x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
           x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_tmp = key_file.with_suffix(".tmp")
    fd = os.open(key_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_tmp = cert_file.with_suffix(".tmp")
    cert_tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_tmp, key_file)
    os.replace(cert_tmp, cert_file)
