"""CLI commands about the store itself: is it reachable, and this node's local cache of it."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.cache import refresh_cache
from ..store.health import store_health
from .common import EXIT_FAILURE, CliError, home_of, print_json


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("store", help="the store: reachability and this node's local cache"
                        ).add_subparsers(dest="action", required=True)
    p = st.add_parser("status", help="ask the store now; show the local cache's age "
                                     "(exit 1 when the store is unreachable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=store_status)
    p = st.add_parser("refresh-cache", help="copy accounts and settings from the store into "
                                            "this node's local cache now")
    p.set_defaults(func=store_refresh)


def store_status(args: argparse.Namespace) -> int:
    health = store_health(home_of(args))
    if args.json:
        print_json(health.as_dict())
    else:
        print(health.summary())
    return 0 if health.reachable else EXIT_FAILURE


def store_refresh(args: argparse.Namespace) -> int:
    home = home_of(args)
    try:
        info = refresh_cache(home)
    except Exception as exc:
        raise CliError(f"the store did not answer, the local cache is unchanged: "
                       f"{type(exc).__name__}: {exc}", EXIT_FAILURE) from None
    if info is None:
        print("this node's store is a local SQLite file; it keeps no cache")
    else:
        print(f"local cache {info.path}: {info.mailboxes} mailboxes, {info.domains} domains")
    return 0
