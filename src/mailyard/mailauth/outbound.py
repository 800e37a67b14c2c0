"""DKIM signing of mail as it leaves the node: which messages, with which keys.

The send service signs each message at the moment it hands it to a remote server, so only
mail that leaves is signed, keys are read by that one service, and a signature is never older
than its delivery attempt. What may be signed is decided from the envelope the queue kept:
the SMTP login (submission) or the local program (sendmail) that injected the message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.accounts import domain_owners
from ..store.dkim_keys import SigningKey, signing_keys
from .dkim_sign import SigningError, from_domain, sign, signing_domain

if TYPE_CHECKING:
    from ..home import Home
    from ..queue import Envelope

# Keys and domain owners are read from the store at most this often per domain: a rotation
# takes effect within a minute, and a busy queue does not ask the store once per message.
KEY_CACHE_SECONDS = 60.0
# The protocol the local sendmail writes into the envelope.
LOCAL_PROTOCOL = "local"


@dataclass(frozen=True)
class SenderFacts:
    """Who injected a message, as far as the envelope proves it."""

    authenticated: bool
    login_domain: str  # the domain of the SMTP login; "" for a local program


def sender_facts(envelope: Envelope) -> SenderFacts:
    if envelope.auth_user:
        return SenderFacts(True, envelope.auth_user.rpartition("@")[2].lower())
    return SenderFacts(envelope.protocol == LOCAL_PROTOCOL, "")


def allowed_domains(facts: SenderFacts, author_domain: str, owners: dict[str, str]) -> list[str]:
    """The domains `facts` may sign for, out of `author_domain`: a login may use its own
    domain and the domains of the same owner (a hosting customer's other domains); a local
    program (root, the mail owner, a site through sendmail) any local domain."""
    if not facts.authenticated or author_domain not in owners:
        return []
    if not facts.login_domain:
        return [author_domain]
    if author_domain == facts.login_domain:
        return [author_domain]
    owner = owners.get(facts.login_domain, "")
    return [author_domain] if owner and owners[author_domain] == owner else []


class Signer:
    """Signs messages for the send service; keeps keys for KEY_CACHE_SECONDS."""

    def __init__(self, home: Home, enabled: bool) -> None:
        self.home = home
        self.enabled = enabled
        self._keys: dict[str, tuple[float, list[SigningKey]]] = {}
        self._owners: tuple[float, dict[str, str]] = (0.0, {})

    def _cached_owners(self) -> dict[str, str]:
        at, owners = self._owners
        if time.monotonic() - at > KEY_CACHE_SECONDS:
            owners = domain_owners(self.home)
            self._owners = (time.monotonic(), owners)
        return owners

    def _cached_keys(self, domain: str) -> list[SigningKey]:
        hit = self._keys.get(domain)
        if hit is None or time.monotonic() - hit[0] > KEY_CACHE_SECONDS:
            hit = (time.monotonic(), signing_keys(self.home, domain))
            self._keys[domain] = hit
        return hit[1]

    def header_for(self, envelope: Envelope, message: bytes) -> tuple[bytes, str]:
        """(DKIM-Signature fields to put above `message`, the domain signed for) or
        (b"", why not) when the message is not signed."""
        if not self.enabled:
            return b"", "signing off"
        author = from_domain(message)
        if author is None:
            return b"", "no single From address"
        owners = self._cached_owners()
        domain = signing_domain(author, sender_facts(envelope).authenticated,
                                allowed_domains(sender_facts(envelope), author, owners))
        if domain is None:
            return b"", f"sender may not sign for {author}"
        keys = self._cached_keys(domain)
        if not keys:
            return b"", f"{domain} has no active key"
        try:
            return sign(message, keys), domain
        except SigningError as exc:
            return b"", str(exc)
