"""`mailyard limits`: the outbound rate limits, every sender's count in the last hour and the
senders refused (docs/limits.md)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..smtp.ratereport import as_json, report
from .common import home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("limits", help="outbound rate limits: counts of the last hour, senders "
                                      "over a limit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=limits_show)


def _limit(value: int) -> str:
    return str(value) if value else "none"


def limits_show(args: argparse.Namespace) -> int:
    limits, rows = report(home_of(args))
    if args.json:
        print_json(as_json(limits, rows))
        return 0
    print(f"limits per hour: messages {_limit(limits.messages_per_hour)}, recipients "
          f"{_limit(limits.recipients_per_hour)}, per domain "
          f"{_limit(limits.domain_messages_per_hour)}; hold when over: "
          f"{'yes' if limits.hold_when_over else 'no'}")
    table = [{"key": r.key, "messages": f"{r.messages}/{_limit(r.messages_limit)}",
              "recipients": f"{r.recipients}/{_limit(r.recipients_limit)}"
              if not r.key.startswith("domain:") else "-",
              "refused": f"{r.refused_rule} at "
                         f"{time.strftime('%H:%M:%S', time.localtime(r.refused_at))}"
              if r.refused_rule else ""} for r in rows]
    print_table(table, ["key", "messages", "recipients", "refused"])
    return 0
