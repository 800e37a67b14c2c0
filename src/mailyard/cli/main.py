"""Entry point of the `mailyard` command: builds the parser from each group of commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..home import HomeError
from . import account_cmds, node_cmds, settings_cmds
from .common import CliError

_GROUPS = [node_cmds, account_cmds, settings_cmds]
_OPTIONAL_GROUPS = ["queue_cmds", "filter_cmds", "token_cmds", "install_cmds", "cluster_cmds",
                    "store_cmds", "dns_cmds", "tls_cmds"]
_OPTIONAL_GROUPS.append("trail_cmds")  # mailyard trail: the delivery trail (issue 19)
_OPTIONAL_GROUPS += ["limits_cmds"]  # issue 19: outbound rate limits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailyard", description="Control a mailyard mail node.")
    parser.add_argument("--home", help="the node's home directory (default: $MAILYARD_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.add_parsers(sub)

    for name in _OPTIONAL_GROUPS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(name):
                continue
            raise
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return exc.status
    except HomeError as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
