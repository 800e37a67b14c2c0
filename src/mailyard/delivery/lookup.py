"""What local delivery asks the store, answered from the process's in-process view of it.

The same view the SMTP servers answer RCPT from (`store.view`): a question costs no query
and no thread hop while the view is current; when the store changed (SQLite's
`data_version`) or, where changes are not announced (PostgreSQL), a "no such mailbox" is
older than the view allows, the view is rebuilt once in a worker thread, shared by every
delivery that needs it meanwhile. So a mailbox created a moment ago is found, and a "no" is
never kept longer than `store.view.NEGATIVE_MAX_AGE`.
"""

from __future__ import annotations

import asyncio

from ..home import Home
from ..store.accounts import mail_key
from ..store.view import AliasFacts, MailboxFacts, Snapshot, StoreView

# A view found stale again after a rebuild already under way is rebuilt once more, so an
# answer never predates the change that made it stale (as smtp/directory.py does).
REBUILD_ATTEMPTS = 2


class Recipients:
    """Alias and mailbox of local addresses, and the domains that are ours, from the view."""

    def __init__(self, home: Home, view: StoreView | None = None) -> None:
        self.view = view or StoreView(home)
        self._rebuild: asyncio.Future[Snapshot] | None = None

    async def _rebuilt(self) -> Snapshot:
        if self._rebuild is None or self._rebuild.done():
            self._rebuild = asyncio.ensure_future(asyncio.to_thread(self.view.refresh))
        return await asyncio.shield(self._rebuild)

    async def snapshot(self, negative: bool = False) -> Snapshot:
        """The view, current enough for a yes (or, with `negative`, for a no). Store errors
        propagate: the caller defers."""
        view = self.view
        snap: Snapshot | None = None
        for _ in range(REBUILD_ATTEMPTS):
            if not view.stale(negative):
                return view.current()
            snap = await self._rebuilt()
        assert snap is not None
        return snap

    async def lookup(self, address: str) -> tuple[AliasFacts | None, MailboxFacts | None]:
        """The alias and the mailbox with exactly this address (its canonical key), each
        None when there is none; an address that can never name one has neither."""
        key = mail_key(address)
        if key is None:
            return None, None
        facts = (await self.snapshot()).recipient(key)
        if not facts.exists:  # a no is asked again where the view may be behind the store
            facts = (await self.snapshot(negative=True)).recipient(key)
        return facts.alias, facts.mailbox

    async def domains(self) -> set[str]:
        """The domains with a row in the store (lower case)."""
        return set((await self.snapshot(negative=True)).domains)

    def close(self) -> None:
        self.view.close()
