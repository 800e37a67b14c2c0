"""SMTP routes (the guide's 4.6.1): which relay, if any, takes mail for a domain.

A route is `DOMAIN:RELAY` or `DOMAIN:RELAY:PORT`. DOMAIN is a domain (that domain only),
`.domain` (its subdomains only) or empty (every domain). An empty RELAY means "look up MX as
usual". The route is chosen as qmail-remote chooses it, whatever the order of the lines: the
line for the whole domain, else the line for its longest `.suffix` (qmail-remote tries the
domain, then each shorter suffix starting at a dot), else the empty-domain `:` line. Of two
lines for the same domain the later one counts, as in qmail's constmap, whose lookup finds
the last line added first. Lines are checked by the settings registry
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


def candidate_keys(domain: str) -> list[str]:
    """The route keys qmail-remote looks up for a domain, most specific first: the domain,
    each suffix that starts at a dot, then the empty key of the `:` line."""
    keys = [domain]
    keys += [domain[i:] for i, ch in enumerate(domain) if ch == "." and i > 0]
    keys.append("")
    return keys


def route_table(lines: Iterable[str]) -> dict[str, Route]:
    """Domain key -> route; a later line for the same key replaces an earlier one."""
    table: dict[str, Route] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, route = parse_route(line)
        table[pattern] = route
    return table


def route_for(lines: Iterable[str], domain: str) -> Route:
    """The route of `domain` as qmail-remote picks it, else normal MX delivery."""
    domain = domain.lower().rstrip(".")
    table = route_table(lines)
    for key in candidate_keys(domain):
        if key in table:
            return table[key]
    return Route(None)
