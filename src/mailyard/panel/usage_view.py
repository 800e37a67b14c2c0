"""How full each mailbox is, as the panel reads it: through the root helper (request `usage`),
whose mail owner worker reads the Maildirs (mail/ is the mail owner's, 0750, and the panel's
user is not in its group).

Without a helper (a panel run by hand as root, or the helper not up yet) the usage is read in
this process, as the other `*_or_local` calls of services/helper.py do; an unprivileged
caller then simply sees no figures. A helper that fails shows the figures as unknown: the
Accounts page still lists the mailboxes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import usage
from ..services import helper

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.panel.usage")


def _use(row: dict[str, Any]) -> usage.MailboxUsage:
    return usage.MailboxUsage(str(row["address"]), int(row["quota_mb"]),
                              None if row["used_bytes"] is None else int(row["used_bytes"]),
                              None if row["percent"] is None else float(row["percent"]),
                              str(row["source"]))


def mailboxes(home: Home, domain: str | None = None) -> list[usage.MailboxUsage]:
    """Every mailbox's usage (of one domain), in address order; [] when it cannot be read."""
    try:
        rows = helper.call(home, "usage", domain=domain)
    except helper.HelperUnavailable:
        return usage.mailboxes(home, domain)
    except helper.HelperError as exc:
        log.warning("mailbox usage not read: %s", exc)
        return []
    return [_use(row) for row in rows]


def mailbox(home: Home, address: str) -> usage.MailboxUsage | None:
    """One mailbox's usage; None when there is no such mailbox or it cannot be read."""
    try:
        row = helper.call(home, "usage", address=address)
    except helper.HelperUnavailable:
        return usage.mailbox(home, address)
    except helper.HelperError as exc:
        log.warning("usage of %s not read: %s", address, exc)
        return None
    return None if row is None else _use(row)


def domains(home: Home, uses: list[usage.MailboxUsage] | None = None
            ) -> list[usage.DomainUsage]:
    """Per domain, its mailboxes' usage added up (the store's part is read here)."""
    return usage.domains(home, mailboxes(home) if uses is None else uses)
