"""The mail authentication operations the CLI and the panel share: a domain's records and
their check, read from the store and the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings.registry import dkim_algorithms
from ..store import dkim_keys
from ..store.accounts import local_domains
from ..store.settings_store import load_settings
from .dnscheck import Finding, check_domain, make_resolver
from .records import Record, wanted_records

if TYPE_CHECKING:
    from ..home import Home


class NotLocal(ValueError):
    """The domain is not one of this node's."""


def _domain(home: Home, name: str) -> str:
    domain = name.strip().lower().rstrip(".")
    if domain not in local_domains(home):
        raise NotLocal(f"{domain} is not a domain of this node (see `mailyard domain list`)")
    return domain


def domain_records(home: Home, name: str) -> list[Record]:
    """What `name` should publish; a domain added before DKIM gets its keys now."""
    domain = _domain(home, name)
    settings = load_settings(home)
    dkim_keys.ensure_keys(home, domain, dkim_algorithms(settings["dkim.algorithms"]))
    return wanted_records(domain, settings["server.hostname"], dkim_keys.list_keys(home, domain),
                          settings["dns.dmarc_policy"])


def check(home: Home, name: str) -> list[Finding]:
    """The live check of `name`'s records through the resolver of smtp.dns_resolver."""
    records = domain_records(home, name)
    settings = load_settings(home)
    resolver = make_resolver(str(settings["smtp.dns_resolver"]))
    return check_domain(resolver, _domain(home, name), settings["server.hostname"], records,
                        settings["dns.dmarc_policy"])
