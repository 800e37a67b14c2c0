"""CLI commands for domains, mailboxes, aliases and admin accounts."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from .. import usage
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
    p = dom.add_parser("set", help="change a domain's owner")
    p.add_argument("name")
    p.add_argument("--owner", required=True, help="system user owning the domain; '' for none")
    p.set_defaults(func=domain_set)
    p = dom.add_parser("usage", help="per domain: mailboxes, bytes used and quotas added up")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=domain_usage)

    box = sub.add_parser("mailbox", help="mailboxes").add_subparsers(dest="action", required=True)
    p = box.add_parser("add", help="password: prompted twice, or first line of stdin")
    p.add_argument("address")
    p.add_argument("--quota-mb", type=int, default=0, help="megabytes, 0 for no limit")
    p.set_defaults(func=mailbox_add)
    p = box.add_parser("set", help="change a mailbox's quota or whether it is active")
    p.add_argument("address")
    p.add_argument("--quota-mb", type=int, help="megabytes, 0 for no limit")
    p.add_argument("--active", choices=["yes", "no"], help="no: mail to it is refused at RCPT "
                                                           "(550 5.2.1) and it cannot log in")
    p.add_argument("--messages-per-hour", metavar="N|default",
                   help="its own outbound limit: N messages per hour (0: none), or default "
                        "(or -1) for the node's limits.messages_per_hour")
    p.set_defaults(func=mailbox_set_with_rate)
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
    p = box.add_parser("usage", help="how full a mailbox is: bytes used, quota, percent")
    p.add_argument("address")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=mailbox_usage)
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


def _flag(flag: str, check: Any, value: Any) -> None:
    """Refuse a bad flag value before anything is asked or changed, naming the flag."""
    try:
        check(value)
    except accounts.AccountError as exc:
        raise CliError(f"{flag}: {exc}", 2) from None


def domain_add(args: argparse.Namespace) -> int:
    _flag("--owner", accounts.check_owner, args.owner)
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


def domain_set(args: argparse.Namespace) -> int:
    _flag("--owner", accounts.check_owner, args.owner)
    row = _run(accounts.set_domain, home_of(args), args.name, owner=args.owner)
    print(f"domain {row['name']}: owner={row['owner'] or '(none)'}")
    return 0


def domain_usage(args: argparse.Namespace) -> int:
    rows = [asdict(d) for d in usage.domains(home_of(args))]
    if args.json:
        print_json(rows)
    else:
        print_table([{**r, "used": usage.human_bytes(r["used_bytes"]),
                      "quota": f"{r['quota_mb']} MB" + (
                          f" + {r['unlimited']} unlimited" if r["unlimited"] else "")}
                     for r in rows], ["name", "mailboxes", "used", "quota"])
    return 0


def _usage_fields(use: usage.MailboxUsage) -> dict[str, Any]:
    """What list and usage add to a mailbox row: bytes used and the percentage of its quota."""
    return {"used_bytes": use.used_bytes, "percent": use.percent}


def _usage_text(use: usage.MailboxUsage) -> dict[str, str]:
    return {"used": usage.human_bytes(use.used_bytes),
            "quota": f"{use.quota_mb} MB" if use.quota_mb else "no limit",
            "percent": "-" if use.percent is None else f"{use.percent} %"}


def mailbox_add(args: argparse.Namespace) -> int:
    _flag("--quota-mb", accounts.check_quota, args.quota_mb)
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
    home = home_of(args)
    rows = [asdict(m) for m in accounts.list_mailboxes(home, args.domain)]
    uses = {u.address: u for u in usage.mailboxes(home, args.domain)}
    for row in rows:
        use = uses.get(row["address"])
        if use is not None:
            row.update(_usage_fields(use))
    if args.json:
        print_json(rows)
    else:
        print_table([{**r, **_usage_text(uses[r["address"]])} if r["address"] in uses else r
                     for r in rows],
                    ["address", "active", "quota", "used", "percent", "spam_action"])
    return 0


def mailbox_usage(args: argparse.Namespace) -> int:
    use = usage.mailbox(home_of(args), args.address)
    if use is None:
        raise CliError(f"no mailbox {args.address}", 2)
    if args.json:
        print_json(asdict(use))
    else:
        text = _usage_text(use)
        print(f"mailbox {use.address}: used {text['used']} of {text['quota']}"
              + ("" if use.percent is None else f" ({text['percent']})"))
    return 0


def mailbox_remove(args: argparse.Namespace) -> int:
    _run(accounts.remove_mailbox, home_of(args), args.address)
    print(f"mailbox {args.address.lower()} removed (its mail stays on disk)")
    return 0


def mailbox_set(args: argparse.Namespace) -> int:
    if args.quota_mb is None and args.active is None:
        raise CliError("say what to change: --quota-mb N and/or --active yes|no", 2)
    if args.quota_mb is not None:
        _flag("--quota-mb", accounts.check_quota, args.quota_mb)
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


# ---- a mailbox's own outbound limit (issue 19, item 3) ------------------------------------------


def messages_per_hour_value(text: str) -> int:
    """The --messages-per-hour argument: N >= 0, or `default` / -1 (the node's limit)."""
    word = text.strip().lower()
    if word in ("default", str(accounts.CLEAR_RATE_LIMIT)):
        return accounts.CLEAR_RATE_LIMIT
    if not word.isdigit() or int(word) > accounts.MAX_MESSAGES_PER_HOUR:
        raise CliError(f"--messages-per-hour {text!r}: allowed are a whole number from 0 (no "
                       f"limit) to {accounts.MAX_MESSAGES_PER_HOUR}, or default (or -1) for "
                       "the node's limits.messages_per_hour", 2)
    return int(word)


def mailbox_set_with_rate(args: argparse.Namespace) -> int:
    """`mailbox set`, with --messages-per-hour besides the quota and the active state."""
    if args.messages_per_hour is None:
        return mailbox_set(args)
    value = messages_per_hour_value(args.messages_per_hour)
    home = home_of(args)
    if args.quota_mb is not None or args.active is not None:
        mailbox_set(args)
    box = _run(accounts.set_mailbox, home, args.address, messages_per_hour=value)
    own = _run(accounts.mailbox_rate_limit, home, box.address)
    print(f"mailbox {box.address}: messages_per_hour="
          f"{'default (limits.messages_per_hour)' if own is None else own or 'no limit'}")
    return 0
