"""CLI commands to list, read and change settings (validated by the registry)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..services.apply_settings import change_settings
from ..settings.registry import REGISTRY
from ..settings.types import SettingError
from ..store.settings_store import load_settings
from .common import EXIT_USAGE, CliError, home_of, print_json


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("settings", help="the node's settings").add_subparsers(
        dest="action", required=True)
    p = st.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.add_argument("prefix", nargs="?", default="", help="only keys starting with this")
    p.set_defaults(func=settings_list)
    p = st.add_parser("get")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=settings_get)
    p = st.add_parser("set", help="VALUE '-' reads it from stdin; list settings take one item "
                                  "per line, or several VALUE arguments")
    p.add_argument("key")
    p.add_argument("value", nargs="*")
    p.add_argument("--no-apply", action="store_true",
                   help="store only; do not reload the running services")
    p.add_argument("--cascade", action="store_true",
                   help="the cluster-wide value, applied on every node (without it: this "
                        "node only; on a single node both are the same)")
    p.set_defaults(func=settings_set)
    p = st.add_parser("help", help="what a setting does and what it allows")
    p.add_argument("key")
    p.set_defaults(func=settings_help)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value) if value else "(empty)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def settings_list(args: argparse.Namespace) -> int:
    values = load_settings(home_of(args))
    keys = [k for k in REGISTRY if k.startswith(args.prefix)]
    if args.json:
        print_json([{"key": k, "value": values[k], "default": REGISTRY[k].default,
                     "type": REGISTRY[k].type.kind, "label": REGISTRY[k].label} for k in keys])
        return 0
    width = max((len(k) for k in keys), default=10)
    for key in keys:
        print(f"{key.ljust(width)}  {_show(values[key])}")
    return 0


def _key(key: str) -> str:
    if key not in REGISTRY:
        raise CliError(f"{key}: no such setting; `mailyard settings list` shows them all",
                       EXIT_USAGE)
    return key


def settings_get(args: argparse.Namespace) -> int:
    key = _key(args.key)
    value = load_settings(home_of(args))[key]
    if args.json:
        print_json({"key": key, "value": value})
    elif isinstance(value, list):
        print("\n".join(value))
    else:
        print(_show(value))
    return 0


def settings_set(args: argparse.Namespace) -> int:
    key = _key(args.key)
    if args.value == ["-"]:
        text: Any = sys.stdin.read()
    elif REGISTRY[key].type.kind == "lines":
        text = "\n".join(args.value)
    elif len(args.value) == 1:
        text = args.value[0]
    else:
        raise CliError(f"{key}: give exactly one value ({REGISTRY[key].type.describe()})",
                       EXIT_USAGE)
    home = home_of(args)
    try:
        result = change_settings(home, {key: text}, apply=not args.no_apply,
                                 cascade=args.cascade)
    except SettingError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    scope = "every node (cascaded)" if args.cascade else f"this node ({home.node_name})"
    print(f"{key} = {_show(result.values[key])} on {scope}")
    if result.reloaded:
        print("reloaded: " + ", ".join(result.reloaded))
    if result.restarted:
        print("restarted (the setting is read at start only): " + ", ".join(result.restarted))
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def settings_help(args: argparse.Namespace) -> int:
    spec = REGISTRY[_key(args.key)]
    print(f"{spec.key} — {spec.label}")
    print(spec.help)
    print(f"allowed: {spec.type.describe()}")
    print(f"default: {_show(spec.default) if spec.default != '' else '(empty)'}")
    print(f"affects: {', '.join(spec.services) or '-'}; cascades to nodes: "
          f"{'yes' if spec.cascade else 'no'}")
    return 0
