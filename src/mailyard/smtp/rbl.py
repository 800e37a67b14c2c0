"""DNS blacklist (DNSBL, the guide's "Realtime (SBL) Blacklists") lookups of client addresses.

A client is listed in a zone when `<reversed address>.<zone>` has an A record in 127.0.0.0/8
(RFC 5782 2.1). Every zone is asked at once; a lookup that fails or takes too long counts as
"not listed", because a broken blacklist must never stop mail (the guide warns that lists slow
mail down; this keeps that to RBL_TIMEOUT at worst).
"""

from __future__ import annotations

import asyncio
import ipaddress

import dns.asyncresolver
import dns.exception
import dns.resolver

# Seconds for all zones together. qmail's rblsmtpd waits up to 60 s; at connection time a
# client waits for us, and a blacklist answers from nearby caches in milliseconds, so a few
# seconds are plenty.
RBL_TIMEOUT = 3.0
# RFC 5782 2.1: listings are A records in 127.0.0.0/8. Spamhaus answers 127.255.255.x for
# errors (over quota, public resolver); those are not listings.
_ERROR_NETWORK = ipaddress.ip_network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> str:
    """`4.3.2.1.zone` for 1.2.3.4; nibbles reversed for IPv6 (RFC 5782 2.4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        labels = str(addr).split(".")[::-1]
    else:
        labels = list(addr.exploded.replace(":", ""))[::-1]
    return ".".join(labels) + "." + zone.rstrip(".") + "."


def is_listing(answer: str) -> bool:
    try:
        addr = ipaddress.ip_address(answer)
    except ValueError:
        return False
    return (isinstance(addr, ipaddress.IPv4Address) and addr in ipaddress.ip_network("127.0.0.0/8")
            and addr not in _ERROR_NETWORK)


def make_resolver(spec: str) -> dns.asyncresolver.Resolver:
    """A resolver for the `smtp.dns_resolver` setting: "" (the system's), "IP" or "IP@PORT"."""
    if not spec:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, _, port = spec.partition("@")
        resolver.nameservers = [host]
        resolver.port = int(port) if port else 53
    resolver.lifetime = RBL_TIMEOUT
    resolver.timeout = RBL_TIMEOUT
    return resolver


async def _listed_in(resolver: dns.asyncresolver.Resolver, ip: str, zone: str) -> bool:
    try:
        answer = await resolver.resolve(query_name(ip, zone), "A", search=False)
    except (dns.exception.DNSException, OSError, ValueError):
        return False  # NXDOMAIN is the usual "not listed"; failures count as not listed
    return any(is_listing(r.to_text()) for r in answer)


async def listing_zone(ip: str, zones: tuple[str, ...], resolver_spec: str = "") -> str | None:
    """The first zone (in the administrator's order) that lists `ip`, or None."""
    if not zones:
        return None
    try:
        ipaddress.ip_address(ip)
        resolver = make_resolver(resolver_spec)
    except (ValueError, dns.exception.DNSException, OSError):
        return None
    tasks = [asyncio.ensure_future(_listed_in(resolver, ip, zone)) for zone in zones]
    try:
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                      timeout=RBL_TIMEOUT + 0.5)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        return None
    for zone, listed in zip(zones, done, strict=True):
        if listed is True:
            return zone
    return None
