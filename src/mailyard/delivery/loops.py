"""Not sending mail to ourselves through the network: which hosts are this node, and which MX
hosts are left once this node is among them.

RFC 5321 5.1: a server listed as an MX for a domain must not deliver to MX hosts of the same or
a worse (higher) preference than its own; if none is better, the domain's mail cannot go
anywhere from here and bounces ("mail for X loops back to myself", the words Postfix uses).
"Ourselves" is this node's SMTP listeners (address and port) and the addresses an
administrator lists for NAT or a proxy in front of the node (setting send.own_addresses).
Plain functions; the only system call is a bind that tells whether an address is this host's.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .resolve import MailHost

# Listen addresses that mean "every address of this host".
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# The enhanced status for a loop (RFC 3463: 5.4.6 routing loop detected).
LOOP_STATUS = "5.4.6"


def loop_text(domain: str) -> str:
    return f"Sorry, mail for {domain} loops back to myself. (#{LOOP_STATUS})"


@functools.lru_cache(maxsize=1024)
def is_local_address(address: str) -> bool:
    """Whether `address` belongs to this host: loopback, or one we can bind to."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    except OSError:  # EADDRNOTAVAIL: not one of ours
        return False
    return True


def parse_own_address(item: str) -> tuple[str, int | None]:
    """(address, port or None for any port) of one send.own_addresses line (already valid)."""
    if item.startswith("["):
        address, _, rest = item[1:].partition("]")
        return address, int(rest[1:]) if rest.startswith(":") else None
    if item.count(":") == 1:
        address, _, port = item.partition(":")
        return address, int(port)
    return item, None


@dataclass(frozen=True)
class Self:
    """What counts as this node on the network."""

    hostnames: frozenset[str]
    listeners: tuple[tuple[str, int], ...]  # (listen address, port) of our SMTP servers
    extra: tuple[tuple[str, int | None], ...] = ()  # send.own_addresses

    @classmethod
    def make(cls, hostname: str, listen_address: str, ports: Iterable[int],
             own_addresses: Iterable[str]) -> Self:
        return cls(frozenset({hostname.lower().rstrip(".")}),
                   tuple((listen_address, p) for p in ports),
                   tuple(parse_own_address(a) for a in own_addresses))

    def is_me(self, address: str, port: int) -> bool:
        """Whether connecting to address:port would reach this node."""
        for addr, own_port in self.extra:
            if _same_address(addr, address) and own_port in (None, port):
                return True
        for addr, own_port in self.listeners:
            if own_port != port:
                continue
            if addr in _WILDCARDS:
                if is_local_address(address):
                    return True
            elif _same_address(addr, address):
                return True
        return False

    def is_my_name(self, name: str) -> bool:
        return name.lower().rstrip(".") in self.hostnames

    def is_host_me(self, host: MailHost, port: int) -> bool:
        return self.is_my_name(host.name) or any(self.is_me(a, port) for a in host.addresses)


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def hosts_better_than_me(hosts: Sequence[MailHost], me: Self, port: int) -> list[MailHost]:
    """The MX hosts to try: all of them, or only those preferred over this node when it is
    listed (an empty list then means the mail loops back)."""
    mine = [h.preference for h in hosts if me.is_host_me(h, port)]
    if not mine:
        return list(hosts)
    best_mine = min(mine)
    return [h for h in hosts if h.preference < best_mine]


def ehlo_names_me(ehlo_lines: Sequence[str], me: Self) -> bool:
    """Whether a server's EHLO/HELO reply names this node (its first word after the code)."""
    if not ehlo_lines:
        return False
    words = ehlo_lines[0][4:].split()
    return bool(words) and me.is_my_name(words[0])
