"""CLI commands for mail authentication: DKIM keys and the DNS records of each domain."""

from __future__ import annotations

from typing import Any

from ..mailauth import service
from ..mailauth.dnscheck import passed
from ..mailauth.records import zone_text
from ..store import dkim_keys
from .common import EXIT_FAILURE, CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    dns = sub.add_parser("dns", help="the DNS records each domain should publish").add_subparsers(
        dest="action", required=True)
    p = dns.add_parser("records", help="the records to publish, as zone-file lines")
    p.add_argument("domain")
    p.set_defaults(func=dns_records)
    p = dns.add_parser("check", help="compare what DNS publishes with what is wanted "
                                     "(exit 1 if MX, SPF, DKIM or DMARC is missing or wrong)")
    p.add_argument("domain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=dns_check)

    dkim = sub.add_parser("dkim", help="DKIM signing keys of the domains").add_subparsers(
        dest="action", required=True)
    p = dkim.add_parser("list")
    p.add_argument("domain", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=dkim_list)
    p = dkim.add_parser("rotate", help="new keys under new selectors; the old ones stop signing "
                                       "but stay listed until removed")
    p.add_argument("domain")
    p.set_defaults(func=dkim_rotate)
    p = dkim.add_parser("remove", help="forget a retired key (after its record is taken down)")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(func=dkim_remove)


def dns_records(args: Any) -> int:
    try:
        records = service.domain_records(home_of(args), args.domain)
    except (service.NotLocal, dkim_keys.DkimKeyError) as exc:
        raise CliError(str(exc)) from None
    print(zone_text(records), end="")
    return 0


def dns_check(args: Any) -> int:
    try:
        findings = service.check(home_of(args), args.domain)
    except (service.NotLocal, dkim_keys.DkimKeyError) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a resolver setting this version cannot use
        raise CliError(f"smtp.dns_resolver: {exc}") from None
    if args.json:
        print_json([f.__dict__ for f in findings])
    else:
        print_table([{"kind": f.kind, "name": f.name, "state": f.state.upper(),
                      "detail": f.detail} for f in findings],
                    ["kind", "name", "state", "detail"])
    return 0 if passed(findings) else EXIT_FAILURE


def dkim_list(args: Any) -> int:
    home = home_of(args)
    try:
        keys = dkim_keys.list_keys(home, args.domain)
    except dkim_keys.DkimKeyError as exc:
        raise CliError(str(exc)) from None
    rows = [{"domain": k.domain, "selector": k.selector, "algorithm": k.algorithm,
             "state": "active" if k.active else "retired",
             "created": k.created_at.strftime("%Y-%m-%d %H:%M") if k.created_at else "",
             "retired": k.retired_at.strftime("%Y-%m-%d %H:%M") if k.retired_at else ""}
            for k in keys]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["domain", "selector", "algorithm", "state", "created", "retired"])
    return 0


def dkim_rotate(args: Any) -> int:
    try:
        made = dkim_keys.rotate(home_of(args), args.domain)
    except dkim_keys.DkimKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"new selector(s) for {args.domain}: {', '.join(made)}; publish them "
          f"(`mailyard dns records {args.domain}`) before mail signed with them arrives")
    return 0


def dkim_remove(args: Any) -> int:
    try:
        dkim_keys.remove(home_of(args), args.domain, args.selector)
    except dkim_keys.DkimKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"removed the retired key {args.selector} of {args.domain}")
    return 0
