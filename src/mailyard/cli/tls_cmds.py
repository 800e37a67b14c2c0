"""CLI commands for the node's TLS certificates: install a real one, list what is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..services import certificates
from ..store.settings_store import load_settings
from .common import EXIT_USAGE, CliError, home_of, print_json, print_table


def add_parsers(sub: Any) -> None:
    tls = sub.add_parser("tls", help="the node's TLS certificates").add_subparsers(
        dest="action", required=True)
    p = tls.add_parser("install", help="install a certificate (checked first: key, chain, "
                                       "names, dates); restart the services to use it")
    p.add_argument("cert", help="PEM file: the server's certificate, then its intermediates")
    p.add_argument("key", help="PEM file: the unencrypted private key")
    p.add_argument("--domain", help="a hosted domain's name, chosen by SNI (default: the "
                                    "node's own certificate, for server.hostname)")
    p.set_defaults(func=tls_install)
    p = tls.add_parser("list", help="installed certificates and their expiry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=tls_list)


def tls_install(args: Any) -> int:
    home = home_of(args)
    names = [args.domain] if args.domain else [str(load_settings(home)["server.hostname"])]
    try:
        cert_pem, key_pem = Path(args.cert).read_bytes(), Path(args.key).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}", EXIT_USAGE) from None
    try:
        warnings = certificates.install(home.tls_dir, cert_pem, key_pem, names, args.domain)
    except certificates.CertificateError as exc:
        raise CliError(f"certificate refused, nothing installed: {exc}", EXIT_USAGE) from None
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"installed for {', '.join(names)}; restart smtp, submission, the mail access "
          f"services and the panel to use it (`mailyard service restart NAME`)")
    return 0


def tls_list(args: Any) -> int:
    rows = [{"for": c.name, "names": ", ".join(c.names), "expires": f"{c.not_after:%Y-%m-%d}",
             "days_left": c.days_left, "self_signed": "yes" if c.self_signed else "no",
             "warning": "; ".join(c.warnings)}
            for c in certificates.installed(home_of(args).tls_dir)]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["for", "names", "expires", "days_left", "self_signed", "warning"])
    return 0
