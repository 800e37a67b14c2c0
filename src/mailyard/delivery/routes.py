"""SMTP routes (the guide's 4.6.1): which relay, if any, takes mail for a domain.

A route is `DOMAIN:RELAY` or `DOMAIN:RELAY:PORT`. DOMAIN is a domain (that domain only),
`.domain` (its subdomains only) or empty (every domain). An empty RELAY means "look up MX as
usual". The first line that matches wins. Lines are checked by the settings registry
(settings.types.smtp_route_item) when they are saved; `check_routes` names the bad line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..settings.types import ItemError, smtp_route_item

SMTP_PORT = 25


@dataclass(frozen=True)
class Route:
    """Where to deliver: `relay` None means the domain's own MX hosts."""

    relay: str | None
    port: int = SMTP_PORT
    line: str = ""


def check_routes(lines: Iterable[str]) -> list[str]:
    """Every route line, validated; ValueError names the first bad line and its number."""
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(smtp_route_item(line.strip()))
        except ItemError as err:
            raise ValueError(f"SMTP route line {number}: {err}") from None
    return out


def parse_route(line: str) -> tuple[str, Route]:
    """(domain pattern, route) of one valid line."""
    domain, _, rest = line.partition(":")
    relay, _, port = rest.partition(":")
    if relay.startswith("[") and relay.endswith("]"):
        relay = relay[1:-1]
    return domain.lower(), Route(relay or None, int(port) if port else SMTP_PORT, line)


def domain_matches(pattern: str, domain: str) -> bool:
    if not pattern:
        return True
    if pattern.startswith("."):
        return domain.endswith(pattern) and len(domain) > len(pattern)
    return domain == pattern


def route_for(lines: Iterable[str], domain: str) -> Route:
    """The route of `domain`: the first matching line, else normal MX delivery."""
    domain = domain.lower().rstrip(".")
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, route = parse_route(line)
        if domain_matches(pattern, domain):
            return route
    return Route(None)
