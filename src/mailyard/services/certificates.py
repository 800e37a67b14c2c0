"""Real certificates for the node and its hosted domains: checked and installed (the servers
choose them by SNI: services/server_tls.py, where the paths under HOME/tls are defined).

`mailyard tls install CERT KEY [--domain DOMAIN]` puts a certificate that others can verify in
place of the self-signed one made at init (or beside it, for one hosted domain's name). It is
checked first — the key matches, the chain is in order, the names are covered, the dates are
right — and refused with what is wrong; nothing is written unless every check passes.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..address import is_hostname
from .server_tls import CERT_NAME as CERT_NAME
from .server_tls import DOMAINS_DIR as DOMAINS_DIR
from .server_tls import KEY_NAME as KEY_NAME
from .server_tls import cert_names

# A certificate that ends within this many days is installed with a warning, and `status`
# says so: ACME clients renew at 30 days left (Let's Encrypt's advice), so less is a sign
# that renewal is failing.
EXPIRY_WARNING_DAYS = 30


class CertificateError(ValueError):
    """A certificate or key that cannot be installed; the message says what is wrong."""


@dataclass(frozen=True)
class Installed:
    name: str  # "node" or the domain
    subject: str
    names: tuple[str, ...]
    not_after: dt.datetime
    days_left: int
    self_signed: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)


# ---- checks -----------------------------------------------------------------------------------

def load_chain(pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"the certificate file holds no PEM certificate ({exc})") from None
    return chain


def load_key(pem: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"the key file holds no unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey)):
        raise CertificateError("the key is neither RSA, ECDSA nor Ed25519")
    return key


def covers(pattern: str, name: str) -> bool:
    """RFC 6125 6.4.3: a wildcard stands for exactly one whole left-most label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def check(chain: list[x509.Certificate], key: object, names: list[str],
          now: dt.datetime | None = None) -> list[str]:
    """Warnings of an installable certificate; CertificateError with what is wrong otherwise."""
    now = now or dt.datetime.now(dt.UTC)
    leaf = chain[0]
    public = key.public_key()  # type: ignore[attr-defined]
    if public.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError("the key does not belong to the certificate (the first "
                               "certificate of the file must be the server's own)")
    for child, parent in zip(chain, chain[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, Exception) as exc:
            raise CertificateError(
                f"the chain is not in order: {child.subject.rfc4514_string()} was not issued "
                f"by the certificate after it ({parent.subject.rfc4514_string()}): {exc}"
            ) from None
    if leaf.not_valid_before_utc > now:
        raise CertificateError(f"the certificate is not valid before "
                               f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_after_utc <= now:
        raise CertificateError(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    have = cert_names(leaf)
    missing = [n for n in names if not any(covers(p, n) for p in have)]
    if missing:
        raise CertificateError(f"the certificate is not for {', '.join(missing)} (it names "
                               f"{', '.join(have) or 'nothing'})")
    warnings = []
    days = (leaf.not_valid_after_utc - now).days
    if days < EXPIRY_WARNING_DAYS:
        warnings.append(f"the certificate expires in {days} days "
                        f"({leaf.not_valid_after_utc:%Y-%m-%d}); renew it")
    if len(chain) == 1 and leaf.issuer != leaf.subject:
        warnings.append("the file holds no intermediate certificate; most clients need the "
                        "chain up to (not including) the root")
    return warnings


# ---- installing ------------------------------------------------------------------------------

def target_dir(tls_dir: Path, domain: str | None) -> Path:
    if domain is None:
        return tls_dir
    domain = domain.strip().lower().rstrip(".")
    if not is_hostname(domain):
        raise CertificateError(f"{domain!r} is not a domain name")
    return tls_dir / DOMAINS_DIR / domain


def install(tls_dir: Path, cert_pem: bytes, key_pem: bytes, names: list[str],
            domain: str | None = None) -> list[str]:
    """Check, then write the chain and key atomically (key 0600); the warnings."""
    chain = load_chain(cert_pem)
    key = load_key(key_pem)
    warnings = check(chain, key, names)
    where = target_dir(tls_dir, domain)
    where.mkdir(parents=True, exist_ok=True, mode=0o755)
    _write(where / KEY_NAME, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write(where / CERT_NAME, b"".join(c.public_bytes(serialization.Encoding.PEM)
                                       for c in chain), 0o644)
    return warnings


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def installed(tls_dir: Path, now: dt.datetime | None = None) -> list[Installed]:
    """The node's certificate and every domain's, with their expiry."""
    now = now or dt.datetime.now(dt.UTC)
    found = [("node", tls_dir)]
    domains = tls_dir / DOMAINS_DIR
    if domains.is_dir():
        found += sorted((d.name, d) for d in domains.iterdir() if (d / CERT_NAME).is_file())
    out = []
    for name, where in found:
        try:
            leaf = load_chain((where / CERT_NAME).read_bytes())[0]
        except (OSError, CertificateError):
            continue
        days = (leaf.not_valid_after_utc - now).days
        warnings = (f"expires in {days} days",) if days < EXPIRY_WARNING_DAYS else ()
        out.append(Installed(name, leaf.subject.rfc4514_string(), tuple(cert_names(leaf)),
                             leaf.not_valid_after_utc, days, leaf.issuer == leaf.subject,
                             warnings))
    return out
