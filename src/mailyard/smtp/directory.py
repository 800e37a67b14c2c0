"""What the SMTP servers ask the store: is a domain ours, does a mailbox exist, is a password right.

Recipient and domain questions are answered from the process's in-process view of the store
(`store.view`), which is rebuilt in a worker thread when the store has changed; a question the
view answers costs no thread hop and no query. Password checks go to the store in a worker
thread (argon2 takes tens of milliseconds on purpose, so one login never stalls other
sessions). A store failure raises LookupFailed, which the server answers with a 4xx: mail
waits, it is never refused because of our own trouble.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .. import quota
from ..mailauth import srs
from ..mailauth.forwarding import SRS_SECRET
from ..store import accounts
from ..store.cache import answering_from_cache
from ..store.secrets import secret
from ..store.view import RecipientFacts, Snapshot, StoreView

if TYPE_CHECKING:
    from ..home import Home

# A view found stale after a rebuild that was already under way is rebuilt once more, so an
# answer never predates the change that made the view stale; more would be a store changing
# faster than we can read it, and the answer of the second rebuild is then good enough.
REBUILD_ATTEMPTS = 2


class LookupFailed(RuntimeError):
    """The store could not answer; the text says which question."""


class PasswordChecksBusy(LookupFailed):
    """Too many password checks are waiting in this process: the client is told to try
    again (454) rather than being queued behind them."""


# A password check is argon2 with 64 MiB and tens of milliseconds of CPU on purpose; a burst
# of logins must not take the process's memory or every core. At most PASSWORD_CHECKS run at
# once per SMTP process (the panel allows 2 as well), PASSWORD_QUEUE more wait their turn, and
# any login beyond that gets 454 4.7.0 at once. Dovecot caps its auth workers the same way.
PASSWORD_CHECKS = 2
PASSWORD_QUEUE = 16


class Directory:
    def __init__(self, home: Home, view: StoreView | None = None) -> None:
        self.home = home
        self.view = view or StoreView(home)
        self._rebuild: asyncio.Future[Snapshot] | None = None
        self._srs_key: bytes | None = None
        self._checks = asyncio.Semaphore(PASSWORD_CHECKS)
        self._waiting = 0

    async def _rebuilt(self) -> Snapshot:
        """One rebuild in a worker thread, shared by every session that needs it meanwhile."""
        if self._rebuild is None or self._rebuild.done():
            self._rebuild = asyncio.ensure_future(asyncio.to_thread(self.view.refresh))
        return await asyncio.shield(self._rebuild)

    async def snapshot(self, negative: bool = False) -> Snapshot:
        """The view, current enough for a yes (or, with `negative`, for a no)."""
        view = self.view
        try:
            for _ in range(REBUILD_ATTEMPTS):
                if not view.stale(negative):
                    return view.current()
                snap = await self._rebuilt()
            return snap
        except Exception as exc:  # any store or driver error: answer 4xx, log it
            raise LookupFailed(f"recipient: {type(exc).__name__}: {exc}") from exc

    async def recipient(self, address: str) -> RecipientFacts:
        """Everything the view knows about one address (domain, mailbox, alias, owner), looked
        up by its canonical key (`accounts.mail_key`): an address that can never name a
        mailbox here (a quoted local part with spaces) has neither mailbox nor alias."""
        key = accounts.mail_key(address)
        lookup = key if key is not None else address.strip().lower()
        facts = (await self.snapshot()).recipient(lookup)
        if not facts.exists:  # a no is asked again where the view may be behind the store
            facts = (await self.snapshot(negative=True)).recipient(lookup)
        if key is None:
            return RecipientFacts(facts.domain_local, None, None, facts.domain_owner)
        if facts.domain_local and not facts.exists and answering_from_cache(self.home):
            # The cache may be older than this mailbox: the sender tries again later rather
            # than being told the address does not exist. (A domain the cache does not know
            # is taken as someone else's, so that relaying for signed-in users goes on.)
            raise LookupFailed(f"recipient: {address} is not in the local cache, and the "
                               "store is away")
        return facts

    async def recipient_facts(self, domain: str, address: str) -> tuple[bool, bool, bool]:
        """(the domain is ours, a mailbox or alias has this address, it is active: false
        only for a disabled mailbox; an alias of the same name delivers, so it is active)."""
        facts = await self.recipient(address)
        active = facts.alias is not None or facts.mailbox is None or facts.mailbox.active
        return facts.domain_local, facts.exists, active

    async def sender_facts(self, login: str, sender: str) -> tuple[bool, bool]:
        """What sender authorization needs about a logged-in mailbox `login` using `sender`
        as MAIL FROM: (an alias `sender` delivers to `login`, the two domains have the same
        non-empty owner)."""
        login_key, sender_key = accounts.mail_key(login), accounts.mail_key(sender)
        if login_key is None or sender_key is None:
            return False, False
        login_facts = await self.recipient(login_key)
        sender_facts = await self.recipient(sender_key)
        alias_of_login = (sender_facts.alias is not None
                          and login_key in sender_facts.alias.targets)
        owner = login_facts.domain_owner
        return alias_of_login, bool(owner) and sender_facts.domain_owner == owner

    async def is_local_domain(self, domain: str) -> bool:
        return (await self.recipient(f"postmaster@{domain}")).domain_local

    async def recipient_exists(self, address: str) -> bool:
        """A mailbox or an alias with exactly this address."""
        return (await self.recipient(address)).exists

    async def quota_use(self, address: str) -> tuple[int, int]:
        """(the mailbox's quota in MB, 0 for none; bytes it uses, 0 when it has no quota):
        the usage is read from its maildirsize (and counted when missing) only for a
        mailbox with a quota, in a worker thread."""
        facts = await self.recipient(address)
        if facts.mailbox is None or not facts.mailbox.quota_mb:
            return 0, 0
        limit = facts.mailbox.quota_mb
        maildir = self.home.maildir(facts.mailbox.address)
        try:
            used = await asyncio.to_thread(quota.current, maildir, limit)
        except FileNotFoundError:
            return limit, 0  # no Maildir yet: nothing in it
        except OSError as exc:
            raise LookupFailed(f"quota: {type(exc).__name__}: {exc}") from exc
        return limit, used

    async def srs_valid(self, address: str) -> bool:
        """An SRS address this node made (a bounce of mail an alias forwarded), not too old."""
        try:
            if self._srs_key is None:
                self._srs_key = await asyncio.to_thread(secret, self.home, SRS_SECRET)
            srs.reverse(address, self._srs_key)
        except srs.SrsError:
            return False
        except Exception as exc:  # any store or driver error: answer 4xx, log it
            raise LookupFailed(f"srs: {type(exc).__name__}: {exc}") from exc
        return True

    async def check_password(self, username: str, password: str) -> bool:
        if self._waiting >= PASSWORD_CHECKS + PASSWORD_QUEUE:
            raise PasswordChecksBusy(f"password: {self._waiting} checks under way or waiting")
        self._waiting += 1
        try:
            async with self._checks:
                return bool(await asyncio.to_thread(accounts.check_mailbox_password,
                                                    self.home, username, password))
        except Exception as exc:  # any store or driver error: answer 4xx, log it
            raise LookupFailed(f"password: {type(exc).__name__}: {exc}") from exc
        finally:
            self._waiting -= 1
