"""Helpers shared by the CLI's commands: finding the home, output, reading passwords."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

from ..home import Home

# Exit statuses: 2 for a refused value or bad usage (as argparse), 1 for a failure.
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def home_of(args: Any) -> Home:
    return Home.find(getattr(args, "home", None))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def read_password(prompt: str = "Password: ") -> str:
    """Twice from a terminal; otherwise the first line of standard input. Never from argv."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        again = getpass.getpass("Again: ")
        if first != again:
            raise CliError("the two passwords differ; nothing changed")
        return first
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise CliError("no password on standard input; nothing changed")
    return password
