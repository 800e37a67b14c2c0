"""Finding the hosts that take mail for a domain: MX in preference order, else A/AAAA.

RFC 5321 5.1: MX records sorted by preference (equal ones shuffled), the domain itself when it
has no MX; RFC 7505: a lone MX of "." (null MX) means the domain takes no mail at all.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..settings.types import parse_resolver_setting

# How long one name may take to resolve, retries included (dnspython's default is 5 s, too
# short for a slow upstream; qmail waits as long as the resolver library does, about 30 s).
DNS_LIFETIME_SECONDS = 30.0
# Answers kept in the send service's DNS cache: a few per destination domain; dnspython's
# own default for its LRU cache is 100,000, far more than a queue needs.
DNS_CACHE_ENTRIES = 10_000


class DnsError(Exception):
    """A lookup that did not give hosts; `temporary` says whether to try again later."""

    def __init__(self, text: str, *, temporary: bool, status: str) -> None:
        super().__init__(text)
        self.text = text
        self.temporary = temporary
        self.status = status


@dataclass(frozen=True)
class MailHost:
    name: str
    addresses: tuple[str, ...]
    preference: int = 0  # the MX preference; 0 for a route's relay or a domain without MX


def make_resolver(spec: str) -> dns.asyncresolver.Resolver:
    server = parse_resolver_setting(spec)
    if server is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
    resolver.lifetime = DNS_LIFETIME_SECONDS
    # MX, A and AAAA answers are kept for their TTL (and no longer), so a burst of mail to
    # one domain asks the DNS once, as a caching resolver in front of qmail would.
    resolver.cache = dns.resolver.LRUCache(DNS_CACHE_ENTRIES)
    return resolver


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def host_addresses(resolver: dns.asyncresolver.Resolver, host: str) -> tuple[str, ...]:
    """IPv4 then IPv6 addresses of a host; DnsError when it has none."""
    if is_ip_literal(host):
        return (host,)
    found: list[str] = []
    temporary = False
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN,
                dns.resolver.NoRootSOA, dns.exception.DNSException):
            temporary = True
            continue
        found.extend(r.address for r in answer)
    if found:
        return tuple(found)
    if temporary:
        raise DnsError(f"Temporary failure looking up the address of {host}. (#4.4.3)",
                       temporary=True, status="4.4.3")
    raise DnsError(f"Sorry, I couldn't find any host named {host}. (#5.1.2)",
                   temporary=False, status="5.1.2")


async def mail_hosts(resolver: dns.asyncresolver.Resolver, domain: str,
                     rng: random.Random | None = None) -> list[MailHost]:
    """The hosts to try for `domain`, best first, each with its addresses."""
    rng = rng or random.Random()
    domain = domain.rstrip(".").lower()
    if domain.startswith("[") and domain.endswith("]"):  # an address literal, RFC 5321 4.1.3
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        if not is_ip_literal(literal):
            raise DnsError(f"Sorry, {domain} is not a valid address literal. (#5.1.2)",
                           temporary=False, status="5.1.2")
        return [MailHost(literal, (literal,))]
    names: list[tuple[str, int]]
    try:
        answer = await resolver.resolve(domain, "MX", search=False)
        records = sorted(answer, key=lambda r: (r.preference, rng.random()))
        exchanges = [r.exchange for r in records]
        if exchanges and all(x == dns.name.root for x in exchanges):
            raise DnsError(f"Sorry, {domain} does not accept mail (null MX). (#5.1.10)",
                           temporary=False, status="5.1.10")
        names = [(r.exchange.to_text(omit_final_dot=True).lower(), int(r.preference))
                 for r in records if r.exchange != dns.name.root]
    except dns.resolver.NXDOMAIN:
        raise DnsError(f"Sorry, I couldn't find any host named {domain}. (#5.1.2)",
                       temporary=False, status="5.1.2") from None
    except dns.resolver.NoAnswer:
        names = [(domain, 0)]  # no MX: the domain itself is the mail host (RFC 5321 5.1)
    except dns.exception.DNSException:
        raise DnsError(f"Temporary failure looking up MX of {domain}. (#4.4.3)",
                       temporary=True, status="4.4.3") from None
    hosts: list[MailHost] = []
    errors: list[DnsError] = []
    for name, preference in names:
        try:
            hosts.append(MailHost(name, await host_addresses(resolver, name), preference))
        except DnsError as err:
            errors.append(err)
    if hosts:
        return hosts
    if any(e.temporary for e in errors) or not errors:
        raise DnsError(f"Temporary failure looking up the mail hosts of {domain}. (#4.4.3)",
                       temporary=True, status="4.4.3")
    raise DnsError(f"Sorry, no mail host of {domain} has an address. (#5.4.4)",
                   temporary=False, status="5.4.4")
