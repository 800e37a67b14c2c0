"""DKIM keys of the local domains: made, listed, rotated and retired in the store.

Like the password hashes beside it (`passwords.py`), key material is made here, where it is
stored: a domain's first key is made in the same transaction that adds the domain, so no
domain exists without one. Private keys never leave the store except to the signer.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import session_scope
from .models import DkimKey, Domain

if TYPE_CHECKING:
    from ..home import Home

# RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD use 2048; the large
# providers (and Mail-in-a-Box, mailcow) publish 2048-bit keys, which still fit one TXT record
# split into 255-octet strings.
RSA_KEY_BITS = 2048
# RFC 6376 3.6.2.1 / RFC 5321: a selector is one or more DNS labels; one label of at most 63.
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ALGORITHMS = ("rsa", "ed25519")


class DkimKeyError(ValueError):
    """A refused key operation; the message says what and why."""


@dataclass(frozen=True)
class KeyInfo:
    domain: str
    selector: str
    algorithm: str
    public_b64: str
    active: bool
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str
    private_pem: bytes


def new_key_pair(algorithm: str) -> tuple[str, str]:
    """(private key PEM, public key base64 for the DNS p= tag) of a fresh key."""
    # Only here, where a key is made (a domain added, a rotation: the panel and the CLI):
    # the send and SMTP services read keys and accounts through this module and never make
    # one, and cryptography costs each about 2 MiB (issue 20).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "rsa":
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=RSA_KEY_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    elif algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463 4.2: p= is the raw 32-octet public key, not a SubjectPublicKeyInfo.
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        # dkimpy takes an Ed25519 private key as the base64 of its 32 raw octets.
        pem = base64.b64encode(private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
    else:
        raise DkimKeyError(f"DKIM key algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return pem.decode(), base64.b64encode(public).decode()


def selector_for(algorithm: str, when: datetime | None = None) -> str:
    """The selector a key made now gets: the date, so that a rotation gets a new one, and the
    algorithm for the Ed25519 key that sits beside the RSA one (RFC 8463 signs with both)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d")
    return f"my{stamp}" if algorithm == "rsa" else f"my{stamp}e"


def add_first_keys(session: Session, domain: Domain, algorithms: tuple[str, ...]) -> None:
    """The keys of a domain being added, inside the caller's transaction."""
    for algorithm in algorithms:
        pem, public = new_key_pair(algorithm)
        session.add(DkimKey(domain=domain, selector=selector_for(algorithm), algorithm=algorithm,
                            private_pem=pem, public_b64=public, active=True))


def _domain(session: Session, name: str) -> Domain:
    domain = session.scalar(select(Domain).where(Domain.name == name.strip().lower()))
    if domain is None:
        raise DkimKeyError(f"no domain {name} on this node")
    return domain


def _info(domain: str, row: DkimKey) -> KeyInfo:
    return KeyInfo(domain=domain, selector=row.selector, algorithm=row.algorithm,
                   public_b64=row.public_b64, active=row.active, created_at=row.created_at,
                   retired_at=row.retired_at)


def ensure_keys(home: Home, domain: str, algorithms: tuple[str, ...]) -> None:
    """Give a domain that has no active key of an algorithm one (domains added before DKIM)."""
    with session_scope(home.db_url) as s:
        row = _domain(s, domain)
        have = set(s.scalars(select(DkimKey.algorithm).where(
            DkimKey.domain_id == row.id, DkimKey.active.is_(True))))
        missing = tuple(a for a in algorithms if a not in have)
        if missing:
            _add_keys(s, row, missing)


def _add_keys(session: Session, domain: Domain, algorithms: tuple[str, ...]) -> list[str]:
    taken = set(session.scalars(select(DkimKey.selector).where(DkimKey.domain_id == domain.id)))
    made = []
    for algorithm in algorithms:
        selector = selector_for(algorithm)
        suffix = 1
        while selector in taken:  # a second rotation on the same day
            suffix += 1
            selector = f"{selector_for(algorithm)}-{suffix}"
        taken.add(selector)
        pem, public = new_key_pair(algorithm)
        session.add(DkimKey(domain_id=domain.id, selector=selector, algorithm=algorithm,
                            private_pem=pem, public_b64=public, active=True))
        made.append(selector)
    return made


def list_keys(home: Home, domain: str | None = None) -> list[KeyInfo]:
    with session_scope(home.db_url) as s:
        query = select(Domain.name, DkimKey).join(DkimKey, DkimKey.domain_id == Domain.id)
        if domain is not None:
            query = query.where(Domain.id == _domain(s, domain).id)
        rows = s.execute(query.order_by(Domain.name, DkimKey.created_at, DkimKey.id)).all()
        return [_info(name, key) for name, key in rows]


def rotate(home: Home, domain: str) -> list[str]:
    """New keys (new selectors) for every algorithm the domain signs with; the old keys stop
    signing but stay listed (and so in the records to publish) until retired with `remove`."""
    now = datetime.now(UTC)
    with session_scope(home.db_url) as s:
        row = _domain(s, domain)
        old = list(s.scalars(select(DkimKey).where(DkimKey.domain_id == row.id,
                                                   DkimKey.active.is_(True))))
        algorithms = tuple(sorted({k.algorithm for k in old}, key=ALGORITHMS.index)) or ("rsa",)
        for key in old:
            key.active = False
            key.retired_at = now
        return _add_keys(s, row, algorithms)


def remove(home: Home, domain: str, selector: str) -> None:
    """Forget a retired key (after its DNS record has been taken down)."""
    if not _SELECTOR.match(selector):
        raise DkimKeyError(f"{selector!r} is not a selector (one DNS label: letters, digits, "
                           f"hyphens)")
    with session_scope(home.db_url) as s:
        row = _domain(s, domain)
        key = s.scalar(select(DkimKey).where(DkimKey.domain_id == row.id,
                                             DkimKey.selector == selector))
        if key is None:
            raise DkimKeyError(f"{domain} has no DKIM key with selector {selector}")
        if key.active:
            raise DkimKeyError(f"the key {selector} of {domain} still signs; rotate first "
                               f"(`mailyard dkim rotate {domain}`)")
        s.delete(key)


def signing_keys(home: Home, domain: str) -> list[SigningKey]:
    """The active keys of `domain` (RSA first), or [] when it has none or is not local."""
    with session_scope(home.db_url) as s:
        rows = s.execute(
            select(DkimKey.selector, DkimKey.algorithm, DkimKey.private_pem)
            .join(Domain, Domain.id == DkimKey.domain_id)
            .where(Domain.name == domain.lower(), DkimKey.active.is_(True))).all()
    keys = [SigningKey(domain.lower(), sel, alg, pem.encode()) for sel, alg, pem in rows]
    return sorted(keys, key=lambda k: ALGORITHMS.index(k.algorithm))
