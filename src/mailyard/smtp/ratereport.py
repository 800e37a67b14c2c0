"""What the outbound rate counters say, for people: `mailyard limits` and the panel's problems.

One function over the counter file, the settings and the mailboxes' own limits, so the CLI and
the panel show the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..store.settings_store import load_settings
from ..store.view import read_snapshot
from . import ratelimit as RL
from .ratetable import RateTable

if TYPE_CHECKING:
    from ..home import Home


@dataclass(frozen=True)
class Row:
    """One sender (or domain) counted in the last hour."""

    key: str
    messages: int  # in the last hour
    recipients: int  # remote recipients in the last hour
    messages_limit: int  # 0: none
    recipients_limit: int  # 0: none (domains have none)
    refused_rule: str  # the rule that refused it in the last hour, "" if none
    refused_at: float  # when (seconds since the epoch), 0 if never

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(home: Home) -> tuple[RL.Limits, list[Row]]:
    """The node's limits and a row per key counted or refused in the last hour, the ones
    refused first."""
    limits = RL.Limits.from_settings(load_settings(home))
    with RateTable(home) as table:
        counts, over = table.report()
    overrides = {}
    if any(k.startswith("mailbox:") for k in (*counts, *over)):
        overrides = {a: m.messages_per_hour for a, m in read_snapshot(home).mailboxes.items()}
    rows = []
    for key in sorted(set(counts) | set(over)):
        messages, recipients = counts.get(key, (0, 0))
        if key.startswith("domain:"):
            msg_limit, rcpt_limit = limits.domain_messages_per_hour, 0
        else:
            override = overrides.get(key.removeprefix("mailbox:"))
            msg_limit = limits.messages_per_hour if override is None else override
            rcpt_limit = limits.recipients_per_hour
        refused = over.get(key)
        rows.append(Row(key, messages, recipients, msg_limit, rcpt_limit,
                        str(refused[1]) if refused else "",
                        float(refused[0]) if refused else 0.0))
    rows.sort(key=lambda r: (not r.refused_rule, r.key))
    return limits, rows


def refused(home: Home) -> list[Row]:
    """The keys refused by a limit in the last hour (the panel's warning)."""
    return [r for r in report(home)[1] if r.refused_rule]


def as_json(limits: RL.Limits, rows: list[Row]) -> dict[str, Any]:
    """The report as `mailyard limits --json` and the API give it."""
    return {"limits": {"messages_per_hour": limits.messages_per_hour,
                       "recipients_per_hour": limits.recipients_per_hour,
                       "domain_messages_per_hour": limits.domain_messages_per_hour,
                       "hold_when_over": limits.hold_when_over},
            "senders": [r.as_dict() for r in rows]}
