"""What the SMTP servers ask the store: is a domain ours, does a mailbox exist, is a password right.

Each question runs in a worker thread (the store may be PostgreSQL across the network, and
argon2 takes tens of milliseconds on purpose), so one slow answer never stalls other sessions.
A store failure raises LookupFailed, which the server answers with a 4xx: mail waits, it is
never refused because of our own trouble.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..store import accounts
from ..store.cache import StoreUnavailable, answering_from_cache, read_scope
from ..store.models import Alias, Domain, Mailbox

if TYPE_CHECKING:
    from ..home import Home


class LookupFailed(RuntimeError):
    """The store could not answer; the text says which question."""


class Directory:
    def __init__(self, home: Home) -> None:
        self.home = home

    async def _ask(self, what: str, func, *args):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.to_thread(func, self.home, *args)
        except Exception as exc:  # any store or driver error: answer 4xx, log it
            raise LookupFailed(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def is_local_domain(self, domain: str) -> bool:
        return bool(await self._ask("domain", accounts.is_local_domain, domain))

    async def recipient_exists(self, address: str) -> bool:
        """A mailbox or an alias with exactly this address."""
        return bool(await self._ask("recipient", _recipient_exists, address))

    async def recipient_facts(self, domain: str, address: str) -> tuple[bool, bool, bool]:
        """(the domain is ours, a mailbox or alias has this address, it is active: false
        only for a disabled mailbox): one question, one transaction, one thread hop per RCPT."""
        return await self._ask("recipient", _recipient_facts, domain, address)

    async def sender_facts(self, login: str, sender: str) -> tuple[bool, bool]:
        """(an alias `sender` delivers to `login`, both domains have the same owner)."""
        return await self._ask("sender", accounts.sender_facts, login, sender)

    async def check_password(self, username: str, password: str) -> bool:
        return bool(await self._ask("password", accounts.check_mailbox_password,
                                    username, password))


def _recipient_facts(home: Home, domain: str, address: str) -> tuple[bool, bool, bool]:
    key = accounts.mail_key(address)  # canonical; None for what can never be a mailbox here
    with read_scope(home) as s:
        if s.scalar(select(Domain.id).where(Domain.name == domain.lower())) is None:
            facts = (False, False, True)
        elif key is None:
            facts = (True, False, True)
        elif s.scalar(select(Alias.id).where(Alias.source == key)) is not None:
            facts = (True, True, True)  # an alias delivers (a same-named mailbox or not)
        else:
            active = s.scalar(select(Mailbox.active).where(Mailbox.address == key))
            facts = (True, active is not None, bool(active) if active is not None else True)
    if facts[:2] == (True, False) and key is not None and answering_from_cache(home):
        # The cache may be older than this mailbox: the sender tries again later rather than
        # being told the address does not exist. (A domain the cache does not know is taken
        # as someone else's, so that relaying for signed-in users goes on.)
        raise StoreUnavailable(f"{address} is not in the local cache, and the store is away")
    return facts


def _recipient_exists(home: Home, address: str) -> bool:
    return (accounts.get_mailbox(home, address) is not None
            or accounts.get_alias(home, address) is not None)
