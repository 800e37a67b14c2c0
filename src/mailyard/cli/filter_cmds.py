"""CLI commands for the filters: virus definitions, Bayes training, SpamAssassin preferences."""

from __future__ import annotations

import argparse
from typing import Any

from ..filters import prefs as spam_prefs
from ..filters import training, virusdb
from ..store.settings_store import load_settings
from .common import EXIT_USAGE, CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    virus = sub.add_parser("virus", help="ClamAV").add_subparsers(dest="action", required=True)
    p = virus.add_parser("info", help="the virus definition files and their signatures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=virus_info)

    spam = sub.add_parser("spam", help="SpamAssassin").add_subparsers(dest="action", required=True)
    p = spam.add_parser("train", help="learn the Learn Spam / Learn Ham folders now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=spam_train)
    prefs = spam.add_parser("prefs", help="advanced SpamAssassin preferences").add_subparsers(
        dest="prefs_action", required=True)
    p = prefs.add_parser("list")
    p.add_argument("--scope")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=prefs_list)
    p = prefs.add_parser("add")
    p.add_argument("preference")
    p.add_argument("value")
    p.add_argument("--scope", default="global",
                   help="global, domain:NAME or mailbox:ADDRESS")
    p.set_defaults(func=prefs_add)
    p = prefs.add_parser("edit")
    p.add_argument("id", type=int)
    p.add_argument("value")
    p.set_defaults(func=prefs_edit)
    p = prefs.add_parser("delete")
    p.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=prefs_delete)


def virus_info(args: argparse.Namespace) -> int:
    home = home_of(args)
    rows = virusdb.definitions(home)
    if args.json:
        print_json(rows)
        return 0
    print_table(rows, ["file", "build_date", "signatures", "kind"])
    print(virusdb.summary(home))
    return 0


def spam_train(args: argparse.Namespace) -> int:
    home = home_of(args)
    report = training.train(home)
    database = "global" if load_settings(home)["spam.bayes_global"] else "mailbox"
    if args.json:
        print_json(report.to_dict())
        return 0
    for box in report.mailboxes:
        print(box.line(database))
    print(f"learned {report.learned} message(s)" + (f"; {report.note}" if report.note else ""))
    return 0


def _pcall(fn: Any, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except spam_prefs.PreferenceError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def prefs_list(args: argparse.Namespace) -> int:
    rows = [vars(p) for p in _pcall(spam_prefs.list_preferences, home_of(args), args.scope)]
    print_json(rows) if args.json else print_table(rows, ["id", "scope", "preference", "value"])
    return 0


def prefs_add(args: argparse.Namespace) -> int:
    pref = _pcall(spam_prefs.add_preference, home_of(args), args.scope, args.preference,
                  args.value)
    print(f"added #{pref.id}: {pref.preference} {pref.value} ({pref.scope})")
    return 0


def prefs_edit(args: argparse.Namespace) -> int:
    pref = _pcall(spam_prefs.edit_preference, home_of(args), args.id, args.value)
    print(f"#{pref.id}: {pref.preference} {pref.value} ({pref.scope})")
    return 0


def prefs_delete(args: argparse.Namespace) -> int:
    home = home_of(args)
    for pref_id in args.ids:
        _pcall(spam_prefs.delete_preference, home, pref_id)
    print(f"deleted {len(args.ids)} preference(s)")
    return 0
