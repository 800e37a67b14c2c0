"""Fixtures of the mail authentication tests: a DNS server on loopback (UDP and TCP)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dnslib.server
import pytest
from tests.delivery.send_harness import DnsServer, ZoneResolver

_QUIET = dnslib.server.DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")


def _free_udp_and_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                return _free_udp_and_tcp_port()
    return port


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """Answers from the records a test adds; UDP and TCP on one port (long TXT answers are
    truncated over UDP and fetched again over TCP, as real resolvers do)."""
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
