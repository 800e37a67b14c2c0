"""CLI commands that create, start, stop and inspect a node and its services."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..cluster.membership import list_nodes
from ..home import CONFIG_NAME, STANDARD_PORTS, Home
from ..nodeinit import HomeUnreachable, check_reach, init_home, setup_postmaster
from ..services import certificates, control
from ..services.errors import ControlError
from ..settings.registry import SERVICE_NAMES
from ..settings.types import SettingError
from ..store.accounts import AccountError
from ..store.cache import uses_cache
from ..store.health import store_health
from ..store.settings_store import load_settings
from . import cascade
from .common import CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("init", help="create a node home")
    p.add_argument("--hostname", required=True, help="the node's mail server hostname (FQDN)")
    p.add_argument("--port-base", type=int, default=0, help="added to every standard port")
    p.add_argument("--db", help="store URL (default: SQLite in the home)")
    p.add_argument("--node-name", default="node1")
    p.add_argument("--postmaster", metavar="ADDRESS",
                   help="mailbox of this node for postmaster@ every local domain and for "
                        "double bounces (default: postmaster@HOSTNAME, created now)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("up", help="start the node and wait until every enabled service serves")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop every service and the supervisor")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="state, pid, uptime and version of every service")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="create the home if needed, start the node, stop on Ctrl-C")
    p.add_argument("--hostname", help="hostname for a new home (default: this machine's)")
    p.add_argument("--port-base", type=int, default=0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("service", help="start, stop, restart or reload one service")
    p.add_argument("action", choices=["start", "stop", "restart", "reload"])
    p.add_argument("name", choices=list(SERVICE_NAMES))
    p.add_argument("--cascade", action="store_true",
                   help="on every node of the cluster (from the manager; not reload)")
    p.set_defaults(func=cmd_service)


def cmd_init(args: argparse.Namespace) -> int:
    root = args.home or os.environ.get("MAILYARD_HOME")
    if not root:
        raise CliError("give the home with --home DIR or MAILYARD_HOME", 2)
    if not 0 <= args.port_base <= 60000:
        raise CliError(f"--port-base: {args.port_base} is not allowed; use 0 to 60000", 2)
    try:
        check_reach(Path(root))  # before anything is made: clamd would fail at `up`, late
    except HomeUnreachable as exc:
        raise CliError(str(exc), 2) from None
    try:
        home, password = init_home(Path(root), args.hostname, args.port_base, args.db,
                                   args.node_name)
        postmaster, made = setup_postmaster(home, args.postmaster)
    except (SettingError, AccountError) as exc:
        raise CliError(str(exc), 2) from None
    print(f"node home ready at {home.root}")
    _say_postmaster(postmaster, made)
    if password:
        print(f"first admin account: admin  password: {password}  (shown once; keep it)")
    return 0


def _say_postmaster(address: str, made: bool) -> None:
    print(f"postmaster mail and double bounces go to {address}"
          + (f" (created; give it a password with `mailyard mailbox passwd {address}`)"
             if made else ""))


def cmd_up(args: argparse.Namespace) -> int:
    home = home_of(args)
    try:
        started = control.up(home, args.timeout)
    except ControlError as exc:
        raise CliError(str(exc)) from None
    print("running: " + ", ".join(started))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    control.down(home_of(args))
    print("node stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    home = home_of(args)
    rows = [s.as_dict() for s in control.status(home)]
    if args.json:
        print_json([{k: r[k] for k in ("name", "state", "pid", "uptime", "version")}
                    for r in rows])
    else:
        if uses_cache(home):  # a shared store: say whether it answers (`mailyard store status`)
            health = store_health(home)
            print(health.summary())
            if health.reachable:
                line = _cluster_line(home)
                if line:
                    print(line)
        print_table(rows, ["name", "state", "pid", "uptime", "version"])
        for line in certificate_lines(home):
            print(line)
    return 0


def certificate_lines(home: Any) -> list[str]:
    """One line per installed TLS certificate: what it is for and when it expires."""
    out = []
    for cert in certificates.installed(home.tls_dir):
        kind = "self-signed" if cert.self_signed else "issued"
        warn = f"  WARNING: {'; '.join(cert.warnings)}" if cert.warnings else ""
        out.append(f"certificate ({cert.name}, {kind}): {', '.join(cert.names)} expires "
                   f"{cert.not_after:%Y-%m-%d} ({cert.days_left} days){warn}")
    return out


def _cluster_line(home: Any) -> str:
    """One line on this node's cluster: its role and how each node last reported."""
    nodes = list_nodes(home)
    me = next((n for n in nodes if n["name"] == home.node_name), None)
    if me is None:
        return ""
    states = ", ".join(f"{n['name']}{' (manager)' if n['role'] == 'manager' else ''} "
                       f"{'reporting' if n['reachable'] else 'UNREACHABLE'}" for n in nodes)
    return f"cluster: this node is the {me['role']}; nodes: {states}"


def cmd_service(args: argparse.Namespace) -> int:
    if args.cascade:
        return cascade.run(args, f"service.{args.action}", service=args.name)
    home = home_of(args)
    try:
        getattr(control, args.action)(home, args.name)
    except ControlError as exc:
        raise CliError(str(exc)) from None
    state = {s.name: s.state for s in control.status(home, with_versions=False)}[args.name]
    print(f"{args.name}: {state}")
    return 0


def _default_hostname() -> str:
    name = socket.getfqdn() or "localhost"
    return name if "." in name else f"{name}.localdomain"


def print_addresses(home: Home) -> None:
    settings = load_settings(home)
    print("ports:")
    for listener in STANDARD_PORTS:
        print(f"  {listener:<11} {home.port(listener, settings)}")
    port, listen = home.port("panel", settings), ipaddress.ip_address(
        str(settings["panel.listen_address"]))
    if listen.is_unspecified:
        print(f"panel: https://{settings['server.hostname']}:{port}/ "
              f"(or https://127.0.0.1:{port}/)")
        return
    where = f"[{listen}]" if listen.version == 6 else str(listen)
    note = (" (this machine only; `mailyard settings set panel.listen_address 0.0.0.0` "
            "opens it to the network)" if listen.is_loopback else "")
    print(f"panel: https://{where}:{port}/{note}")


def cmd_run(args: argparse.Namespace) -> int:
    root = Path(args.home or os.environ.get("MAILYARD_HOME") or "/var/lib/mailyard")
    if not (root / CONFIG_NAME).exists():
        try:
            check_reach(root)
        except HomeUnreachable as exc:
            raise CliError(str(exc), 2) from None
        home, password = init_home(root, args.hostname or _default_hostname(), args.port_base)
        print(f"created node home {home.root}")
        _say_postmaster(*setup_postmaster(home))
        if password:
            print(f"first admin account: admin  password: {password}  (shown once; keep it)")
    home = Home.find(str(root))
    if control.supervisor_running(home):
        raise CliError("this node is running already; stop it with `mailyard down`")
    proc = control.start_supervisor(home, foreground=True)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        try:
            started = control.up(home)
            print("running: " + ", ".join(started))
        except ControlError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        print_addresses(home)
        print("Ctrl-C stops the node.")
        sys.stdout.flush()
        while not stopping and proc is not None and proc.poll() is None:
            time.sleep(0.5)
    finally:
        print("stopping the node...")
        control.down(home)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
    return 0
