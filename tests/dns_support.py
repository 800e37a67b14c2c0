"""A DNS server on loopback for tests: answers from records the test adds, over UDP and TCP
on one port (long TXT answers are truncated over UDP and fetched again over TCP, as real
resolvers do)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import dnslib
import dnslib.server

_QUIET = dnslib.server.DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")


class ZoneResolver(dnslib.server.BaseResolver):  # type: ignore[misc]
    """Answers from `records`: {(name, type): [rdata text, ...]}; unknown names are NXDOMAIN,
    known names without that type get an empty answer; names in `servfail` get SERVFAIL."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()

    def resolve(self, request: dnslib.DNSRecord, handler: object) -> dnslib.DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = dnslib.QTYPE[request.q.qtype]
        if qname in self.servfail:
            reply.header.rcode = dnslib.RCODE.SERVFAIL
            return reply
        if qname not in {name for name, _ in self.records}:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply
        for rdata in self.records.get((qname, qtype), []):
            reply.add_answer(*dnslib.RR.fromZone(f"{qname}. 60 IN {qtype} {rdata}"))
        return reply


@dataclass
class DnsServer:
    resolver: ZoneResolver
    port: int

    @property
    def setting(self) -> str:
        """The value of the setting smtp.dns_resolver that points at this server."""
        return f"127.0.0.1@{self.port}"

    def add(self, name: str, rtype: str, *rdata: str) -> None:
        self.resolver.records.setdefault((name.lower(), rtype), []).extend(rdata)


def _free_udp_and_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


@contextlib.contextmanager
def running_dns_server() -> Iterator[DnsServer]:
    resolver = ZoneResolver()
    for _ in range(50):
        port = _free_udp_and_tcp_port()
        servers = [dnslib.server.DNSServer(resolver, port=port, address="127.0.0.1",
                                           logger=_QUIET, tcp=tcp) for tcp in (False, True)]
        started = []
        try:
            for server in servers:
                server.start_thread()
                started.append(server)
            break
        except OSError:  # taken between the check and the start: try another port
            for server in started:
                server.stop()
    else:
        raise RuntimeError("no port for the DNS server")
    try:
        yield DnsServer(resolver, port)
    finally:
        for server in servers:
            server.stop()
