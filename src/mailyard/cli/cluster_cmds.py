"""CLI commands of a cluster: make the manager, join tokens, join, list nodes and changes."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from ..cluster import manager_token
from ..cluster.agent import run_agent, run_once
from ..cluster.changes import changes_report
from ..cluster.membership import ClusterError, init_manager, join, leave, list_nodes, make_token
from .common import EXIT_USAGE, CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    cl = sub.add_parser("cluster", help="several nodes on one PostgreSQL store").add_subparsers(
        dest="action", required=True)
    p = cl.add_parser("init", help="make this node the cluster's manager")
    p.add_argument("--address", help="this node's panel/API URL as the other nodes reach it "
                                     "(default: https://HOSTNAME:PANEL_PORT)")
    p.set_defaults(func=cluster_init)
    p = cl.add_parser("token", help="print a join token (valid 24 hours; only its hash is kept)")
    p.set_defaults(func=cluster_token)
    p = cl.add_parser("join", help="add this node to the cluster of its store")
    p.add_argument("manager_url", metavar="MANAGER_URL",
                   help="the manager's address, as `mailyard cluster nodes` shows it")
    p.add_argument("--token", required=True, help="a token from `mailyard cluster token`")
    p.add_argument("--address", help="this node's panel/API URL as the other nodes reach it")
    p.set_defaults(func=cluster_join)
    p = cl.add_parser("nodes", help="every node: address, last contact, version, services")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cluster_nodes)
    p = cl.add_parser("changes", help="recent cascaded changes and whether each node applied "
                                      "them")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cluster_changes)
    p = cl.add_parser("remove", help="take a node off the list (after it is shut down)")
    p.add_argument("name")
    p.set_defaults(func=cluster_remove)
    p = cl.add_parser("agent", help="run the heartbeat and change listener in the foreground "
                                    "(the panel runs it on every node)")
    p.add_argument("--once", action="store_true", help="one heartbeat, then exit")
    p.set_defaults(func=cluster_agent)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClusterError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def cluster_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    node = _call(init_manager, home, args.address)
    print(f"{node.name} is the cluster manager at {node.address}")
    path = manager_token.renew(home)
    print(f"node token for cascaded actions: API token {manager_token.TOKEN_NAME}, kept in "
          f"{path} (a new one each time this runs)")
    print("next: `mailyard cluster token` here, then on each node (initialised with the same "
          "--db) `mailyard cluster join URL --token TOKEN`")
    return 0


def cluster_token(args: argparse.Namespace) -> int:
    print(_call(make_token, home_of(args)))
    return 0


def cluster_join(args: argparse.Namespace) -> int:
    node, warning = _call(join, home_of(args), args.manager_url, args.token, args.address)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{node.name} joined the cluster as a member at {node.address}")
    return 0


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def cluster_nodes(args: argparse.Namespace) -> int:
    rows = list_nodes(home_of(args))
    if args.json:
        print_json(rows)
        return 0
    table = []
    for row in rows:
        services = row["services"]
        running = sorted(n for n, s in services.items() if s == "RUNNING")
        other = sorted(f"{n}={s}" for n, s in services.items() if s not in ("RUNNING",
                                                                          "STOPPED"))
        table.append({"node": row["name"], "role": row["role"], "address": row["address"],
                      "version": row["version"],
                      "last contact": _age(row["seconds_since_seen"])
                      + ("" if row["reachable"] else " (unreachable)"),
                      "running": ",".join(running) or "-",
                      "problems": ",".join(other) or "-"})
    print_table(table, ["node", "role", "address", "version", "last contact", "running",
                        "problems"])
    return 0


def cluster_changes(args: argparse.Namespace) -> int:
    report = changes_report(home_of(args), args.limit)
    if args.json:
        print_json(report)
        return 0
    if not report:
        print("(no cascaded changes)")
        return 0
    for change in report:
        value = change["value"].replace("\n", ",")
        if len(value) > 60:
            value = value[:57] + "..."
        print(f"#{change['id']} {change['key']} = {value} (from {change['origin']}, "
              f"{change['created_at']:%Y-%m-%d %H:%M:%S})")
        for outcome in change["nodes"]:
            reason = f": {outcome['error']}" if outcome["error"] else ""
            print(f"    {outcome['node']}: {outcome['state']}{reason}")
    return 0


def cluster_remove(args: argparse.Namespace) -> int:
    _call(leave, home_of(args), args.name)
    print(f"{args.name} removed from the cluster")
    return 0


def cluster_agent(args: argparse.Namespace) -> int:
    home = home_of(args)
    if args.once:
        run_once(home)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stop = threading.Event()
    try:
        run_agent(home, stop)
    except KeyboardInterrupt:
        stop.set()
    return 0
