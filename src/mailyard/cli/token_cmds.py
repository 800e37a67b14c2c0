"""CLI commands for the JSON API's bearer tokens: create, list and revoke."""

from __future__ import annotations

import argparse
from typing import Any

from ..panel import tokens
from .common import CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    tok = sub.add_parser("api-token", help="bearer tokens for the panel's JSON API").add_subparsers(
        dest="action", required=True)
    p = tok.add_parser("create", help="make a token; it is the last line printed, shown once")
    p.add_argument("name")
    p.set_defaults(func=token_create)
    p = tok.add_parser("list", help="token names, when made and when last used")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=token_list)
    p = tok.add_parser("revoke", help="delete a token; scripts using it are refused at once")
    p.add_argument("name")
    p.set_defaults(func=token_revoke)


def token_create(args: argparse.Namespace) -> int:
    try:
        token = tokens.create_token(home_of(args), args.name)
    except tokens.TokenError as exc:
        raise CliError(str(exc), 2) from None
    print(f"API token {args.name} made. It is shown only now; send it as "
          "'Authorization: Bearer TOKEN'. The token:")
    print(token)
    return 0


def token_list(args: argparse.Namespace) -> int:
    rows = [{"name": t.name, "created_at": t.created_at, "last_used": t.last_used or "never"}
            for t in tokens.list_tokens(home_of(args))]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "created_at", "last_used"])
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    try:
        tokens.revoke_token(home_of(args), args.name)
    except tokens.TokenError as exc:
        raise CliError(str(exc), 2) from None
    print(f"API token {args.name} revoked")
    return 0
