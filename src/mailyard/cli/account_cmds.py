"""CLI commands for domains, mailboxes, aliases and admin accounts."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from ..store import accounts
from ..store.models import SPAM_ACTIONS
from .common import CliError, home_of, print_json, print_table, read_password


def add_parsers(sub: Any) -> None:
    dom = sub.add_parser("domain", help="the node's mail domains").add_subparsers(
        dest="action", required=True)
    p = dom.add_parser("add")
    p.add_argument("name")
    p.add_argument("--owner", default="",
                   help="system user owning the domain (log tools' xuser); with "
                        "smtp.sender_owner_domains its mailboxes may send as any of its domains")
    p.set_defaults(func=domain_add)
    p = dom.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=domain_list)
    p = dom.add_parser("remove")
    p.add_argument("name")
    p.set_defaults(func=domain_remove)

    box = sub.add_parser("mailbox", help="mailboxes").add_subparsers(dest="action", required=True)
    p = box.add_parser("add", help="password: prompted twice, or first line of stdin")
    p.add_argument("address")
    p.add_argument("--quota-mb", type=int, default=0)
    p.set_defaults(func=mailbox_add)
    p = box.add_parser("set", help="change a mailbox's quota or whether it is active")
    p.add_argument("address")
    p.add_argument("--quota-mb", type=int, help="megabytes, 0 for no limit")
    p.add_argument("--active", choices=["yes", "no"], help="no: mail to it is refused at RCPT "
                                                           "(550 5.2.1) and it cannot log in")
    p.set_defaults(func=mailbox_set)
    p = box.add_parser("passwd")
    p.add_argument("address")
    p.set_defaults(func=mailbox_passwd)
    p = box.add_parser("list")
    p.add_argument("--domain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=mailbox_list)
    p = box.add_parser("remove")
    p.add_argument("address")
    p.set_defaults(func=mailbox_remove)
    p = box.add_parser("spam-action", help="where this mailbox's spam goes")
    p.add_argument("address")
    p.add_argument("spam_action", choices=SPAM_ACTIONS)
    p.set_defaults(func=mailbox_spam_action)

    ali = sub.add_parser("alias", help="aliases and forwards").add_subparsers(
        dest="action", required=True)
    p = ali.add_parser("add")
    p.add_argument("source")
    p.add_argument("targets", nargs="+")
    p.add_argument("--keep-copy", action="store_true",
                   help="for a forward of a mailbox: also keep a copy in the mailbox")
    p.set_defaults(func=alias_add)
    p = ali.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=alias_list)
    p = ali.add_parser("remove")
    p.add_argument("source")
    p.set_defaults(func=alias_remove)

    adm = sub.add_parser("admin", help="panel administrators").add_subparsers(
        dest="action", required=True)
    p = adm.add_parser("add", help="password: prompted twice, or first line of stdin")
    p.add_argument("username")
    p.set_defaults(func=admin_add)


def _run(fn: Any, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except accounts.AccountError as exc:
        raise CliError(str(exc), 2) from None


def domain_add(args: argparse.Namespace) -> int:
    name = _run(accounts.add_domain, home_of(args), args.name, args.owner)
    print(f"domain {name} added")
    return 0


def domain_list(args: argparse.Namespace) -> int:
    rows = accounts.list_domains(home_of(args))
    print_json(rows) if args.json else print_table(rows, ["name", "owner", "mailboxes"])
    return 0


def domain_remove(args: argparse.Namespace) -> int:
    _run(accounts.remove_domain, home_of(args), args.name)
    print(f"domain {args.name} removed (its mail stays on disk)")
    return 0


def mailbox_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    password = read_password()
    address = _run(accounts.add_mailbox, home, args.address, password, args.quota_mb)
    print(f"mailbox {address} added")
    return 0


def mailbox_passwd(args: argparse.Namespace) -> int:
    home = home_of(args)
    password = read_password("New password: ")
    _run(accounts.set_password, home, args.address, password)
    print(f"password of {args.address.lower()} changed")
    return 0


def mailbox_list(args: argparse.Namespace) -> int:
    rows = [asdict(m) for m in accounts.list_mailboxes(home_of(args), args.domain)]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["address", "active", "quota_mb", "spam_action"])
    return 0


def mailbox_remove(args: argparse.Namespace) -> int:
    _run(accounts.remove_mailbox, home_of(args), args.address)
    print(f"mailbox {args.address.lower()} removed (its mail stays on disk)")
    return 0


def mailbox_set(args: argparse.Namespace) -> int:
    if args.quota_mb is None and args.active is None:
        raise CliError("say what to change: --quota-mb N and/or --active yes|no", 2)
    active = None if args.active is None else args.active == "yes"
    box = _run(accounts.set_mailbox, home_of(args), args.address, quota_mb=args.quota_mb,
               active=active)
    print(f"mailbox {box.address}: active={'yes' if box.active else 'no'} "
          f"quota={box.quota_mb or 'no limit'}{' MB' if box.quota_mb else ''}")
    return 0


def mailbox_spam_action(args: argparse.Namespace) -> int:
    _run(accounts.set_spam_action, home_of(args), args.address, args.spam_action)
    print(f"spam for {args.address.lower()} goes to: {args.spam_action}")
    return 0


def alias_add(args: argparse.Namespace) -> int:
    source = _run(accounts.add_alias, home_of(args), args.source, args.targets, args.keep_copy)
    print(f"alias {source} added")
    return 0


def alias_list(args: argparse.Namespace) -> int:
    rows = [asdict(a) for a in accounts.list_aliases(home_of(args))]
    if args.json:
        print_json(rows)
    else:
        print_table([{**r, "targets": ", ".join(r["targets"])} for r in rows],
                    ["source", "targets", "keep_copy"])
    return 0


def alias_remove(args: argparse.Namespace) -> int:
    _run(accounts.remove_alias, home_of(args), args.source)
    print(f"alias {args.source.lower()} removed")
    return 0


def admin_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    _run(accounts.add_admin, home, args.username, read_password())
    print(f"admin {args.username} added")
    return 0
