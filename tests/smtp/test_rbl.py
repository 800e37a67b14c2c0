"""DNS blacklists against a real DNS server on loopback (dnslib), and the smtp service."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer
from smtp_helpers import RawClient, change

from mailyard.home import Home
from mailyard.smtp.rbl import is_listing, listing_zone, query_name


class Blacklist(BaseResolver):
    """Answers A queries for the listed names with 127.0.0.2; NXDOMAIN otherwise."""

    def __init__(self, listed: dict[str, str]) -> None:
        self.listed = listed
        self.asked: list[str] = []

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        qname = str(request.q.qname)
        self.asked.append(qname)
        reply = request.reply()
        if request.q.qtype == QTYPE.A and qname in self.listed:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(self.listed[qname]), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dns() -> Iterator[tuple[Blacklist, int]]:
    port = udp_port()
    resolver = Blacklist({
        "2.0.0.127.bl.test.": "127.0.0.2",
        "4.0.0.127.second.test.": "127.0.0.4",
        "5.0.0.127.bl.test.": "127.255.255.254",  # an error code, not a listing
    })
    server = DNSServer(resolver, port=port, address="127.0.0.1")
    server.start_thread()
    yield resolver, port
    server.stop()


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A DNS 'server' that reads queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_query_names_of_rfc_5782() -> None:
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test."
    assert query_name("::ffff:192.0.2.99", "bl.test.") == "99.2.0.192.bl.test."
    assert query_name("2001:db8::1", "bl.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.")
    assert is_listing("127.0.0.2") and not is_listing("127.255.255.254")
    assert not is_listing("10.0.0.1")


def test_lookups_against_a_real_dns_server(dns: tuple[Blacklist, int]) -> None:
    _, port = dns
    spec = f"127.0.0.1@{port}"
    zones = ("bl.test", "second.test")
    assert asyncio.run(listing_zone("127.0.0.2", zones, spec)) == "bl.test"
    assert asyncio.run(listing_zone("127.0.0.4", zones, spec)) == "second.test"
    assert asyncio.run(listing_zone("127.0.0.3", zones, spec)) is None
    assert asyncio.run(listing_zone("127.0.0.5", zones, spec)) is None


def test_a_dead_or_silent_resolver_never_refuses(silent_dns: int) -> None:
    assert asyncio.run(listing_zone("127.0.0.2", ("bl.test",), f"127.0.0.1@{silent_dns}")) is None
    assert asyncio.run(listing_zone("127.0.0.2", ("bl.test",), f"127.0.0.1@{udp_port()}")) is None


def test_listed_client_is_refused_with_the_lists_name(node: Home, start, dns) -> None:  # type: ignore[no-untyped-def]
    resolver, port = dns
    change(node, {"smtp.rbl_zones": "bl.test\nsecond.test", "smtp.dns_resolver": f"127.0.0.1@{port}",
                  "smtp.relay_networks": "127.0.0.1/32"})
    svc = start("smtp")
    c = RawClient(node.port("smtp"), source="127.0.0.2")
    assert c.reply() == b"554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test"
    c.send(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n")
    assert c.reply().startswith(b"503 5.5.1 This session was refused")
    assert c.reply().startswith(b"503 ")
    assert c.code() == 221
    c.close()
    clean = RawClient(node.port("smtp"), source="127.0.0.3")
    assert clean.code() == 220
    clean.close()
    trusted = RawClient(node.port("smtp"), source="127.0.0.1")
    assert trusted.code() == 220
    trusted.close()
    svc.wait_log("rule=RBL_LISTED value=127.0.0.2")
    assert not any(name.endswith("1.0.0.127.bl.test.") for name in resolver.asked)


def test_rbl_failure_lets_mail_in(node: Home, start, silent_dns: int) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.rbl_zones": "bl.test", "smtp.dns_resolver": f"127.0.0.1@{silent_dns}",
                  "smtp.relay_networks": "127.0.0.1/32"})
    start("smtp")
    c = RawClient(node.port("smtp"), source="127.0.0.2")
    assert c.code() == 220  # after the lookup timed out
    c.close()
