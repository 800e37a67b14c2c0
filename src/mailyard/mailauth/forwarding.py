"""What mail we forward (aliases, forwards) carries so that the next hop still trusts it: an
SRS envelope sender (SPF passes for us, not for the original domain) and an ARC set
(RFC 8617) sealing what we found when the message reached us.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import dkim

from ..store.accounts import local_domains
from ..store.dkim_keys import signing_keys
from ..store.secrets import secret
from . import srs

if TYPE_CHECKING:
    from ..home import Home

# The local domains are read from the store at most this often (a domain added a minute ago
# may see its first forwarded copy rewritten needlessly; nothing worse).
LOCAL_DOMAINS_SECONDS = 60.0
# The name of the SRS key in the store's secrets.
SRS_SECRET = "srs"
# The headers an ARC-Message-Signature covers (as our DKIM signatures do; RFC 8617 4.1.2;
# dkimpy refuses DKIM-Signature there, which RFC 8617 leaves to the signer).
ARC_HEADERS = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
               b"mime-version", b"content-type", b"content-transfer-encoding"]


class Forwarder:
    def __init__(self, home: Home, settings: dict[str, Any]) -> None:
        self.home = home
        self.hostname = str(settings["server.hostname"]).lower()
        self.srs_on = bool(settings["srs.enabled"])
        self.arc_on = bool(settings["arc.sealing"])
        self._secret: bytes | None = None
        self._local: set[str] = set()
        self._local_at = -LOCAL_DOMAINS_SECONDS

    @property
    def key(self) -> bytes:
        if self._secret is None:
            self._secret = secret(self.home, SRS_SECRET)
        return self._secret

    def sender_for(self, sender: str) -> str:
        """The envelope sender of a forwarded copy."""
        if not self.srs_on:
            return sender
        return srs.forward_address(sender, self.hostname, self.key)

    def is_local(self, address: str) -> bool:
        """An address of a domain of this node (the hostname and default domain included)."""
        now = time.monotonic()
        if now - self._local_at > LOCAL_DOMAINS_SECONDS:
            self._local = local_domains(self.home)
            self._local_at = now
        return address.rpartition("@")[2].lower() in self._local

    def is_srs_address(self, address: str) -> bool:
        local, _, domain = address.rpartition("@")
        return domain.lower() == self.hostname and srs.is_srs(local)

    def original(self, address: str) -> str:
        """Where a bounce to one of our SRS addresses goes; srs.SrsError if it is not one."""
        return srs.reverse(address, self.key)

    def arc_set(self, message: bytes, domain: str) -> bytes:
        """The ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results fields for a
        message (CRLF lines) forwarded for `domain`, sealed with its DKIM key; b"" when it
        cannot be sealed (sealing off, no key, no Authentication-Results of ours on it)."""
        if not self.arc_on:
            return b""
        keys = [k for k in signing_keys(self.home, domain) if k.algorithm == "rsa"]
        if not keys:
            return b""
        key = keys[0]
        try:
            fields = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(),
                                   key.private_pem, self.hostname.encode(),
                                   include_headers=ARC_HEADERS)
        except Exception:  # dkimpy refuses messages it cannot seal (no AR field of ours)
            return b""
        return b"".join(fields)
