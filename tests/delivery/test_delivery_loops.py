"""Mail never loops through the network (issue 16 item 2, the remote part): this node drops MX
hosts no better than itself, treats a server that greets with our hostname as itself, never
connects to its own listeners or send.own_addresses, and a double bounce that comes back is
discarded. Against sinks on loopback port 25 and a DNS server on loopback."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from send_harness import (
    DnsServer,
    SendService,
    SmtpSink,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    start_sink,
    wait_until,
)

from mailyard.home import Home
from mailyard.store.settings_store import set_setting

HOSTNAME = "mx.example.test"  # the node's hostname in the mail_home fixture


def _loopback_address() -> str:
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


@pytest.fixture
def make_sink() -> Iterator[object]:
    stops: list = []

    def make(**kw: object) -> SmtpSink:
        for _ in range(20):
            try:
                s, stop = start_sink(_loopback_address(), 25, **kw)
            except AssertionError:
                continue
            stops.append(stop)
            return s
        raise RuntimeError("no loopback address free for port 25")

    yield make
    for stop in stops:
        stop()


def _bounces(home: Home) -> list[bytes]:
    return [m for m in maildir_messages(home, "joe@example.test") if b"multipart/report" in m]


def _use_dns(home: Home, dns: DnsServer) -> None:
    set_setting(home, "smtp.dns_resolver", dns.setting)


def test_mx_hosts_no_better_than_this_node_are_dropped(mail_home: Home,
                                                        send_service: SendService,
                                                        dns_server: DnsServer,
                                                        make_sink) -> None:
    peer, backup = make_sink(), make_sink()
    dns_server.add("far.test", "MX", f"10 {HOSTNAME}.", "10 peer.far.test.",
                   "20 backup.far.test.")
    dns_server.add(HOSTNAME, "A", _loopback_address())
    dns_server.add("peer.far.test", "A", peer.host)
    dns_server.add("backup.far.test", "A", backup.host)
    _use_dns(mail_home, dns_server)
    send_service.start()
    inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: _bounces(mail_home), what="the loop bounce")[0]
    assert b"mail for far.test loops back to myself" in bounce
    assert b"Status: 5.4.6" in bounce
    assert peer.connections == 0 and backup.connections == 0
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def test_an_mx_better_than_this_node_still_gets_the_mail(mail_home: Home,
                                                        send_service: SendService,
                                                        dns_server: DnsServer,
                                                        make_sink) -> None:
    better, worse = make_sink(), make_sink()
    dns_server.add("far.test", "MX", "5 better.far.test.", f"10 {HOSTNAME}.",
                   "20 worse.far.test.")
    dns_server.add("better.far.test", "A", better.host)
    dns_server.add("worse.far.test", "A", worse.host)
    dns_server.add(HOSTNAME, "A", _loopback_address())
    _use_dns(mail_home, dns_server)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: better.messages, what="delivery to the better MX")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    assert worse.connections == 0


def test_own_address_setting_marks_an_mx_as_this_node(mail_home: Home,
                                                      send_service: SendService,
                                                      dns_server: DnsServer,
                                                      make_sink) -> None:
    other = make_sink()
    nat = _loopback_address()
    dns_server.add("far.test", "MX", "10 front.far.test.", "20 other.far.test.")
    dns_server.add("front.far.test", "A", nat)
    dns_server.add("other.far.test", "A", other.host)
    _use_dns(mail_home, dns_server)
    set_setting(mail_home, "send.own_addresses", [nat])
    send_service.start()
    inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: _bounces(mail_home), what="the loop bounce")[0]
    assert b"loops back to myself" in bounce
    assert other.connections == 0


def test_a_route_to_our_own_listener_bounces(mail_home: Home,
                                            send_service: SendService) -> None:
    port = mail_home.port("smtp")
    set_setting(mail_home, "send.smtp_routes", [f"far.test:127.0.0.1:{port}"])
    send_service.start()
    inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: _bounces(mail_home), what="the loop bounce")[0]
    assert b"mail for far.test loops back to myself" in bounce
    assert any(": failure: Sorry,_mail_for_far.test_loops_back_to_myself._(#5.4.6)/" in line
               for line in read_send_log(mail_home))


def test_best_mx_greeting_with_our_name_bounces(mail_home: Home, send_service: SendService,
                                                dns_server: DnsServer, make_sink) -> None:
    selfish = make_sink(ehlo_name=HOSTNAME)
    dns_server.add("far.test", "MX", "10 selfish.far.test.")
    dns_server.add("selfish.far.test", "A", selfish.host)
    _use_dns(mail_home, dns_server)
    send_service.start()
    inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: _bounces(mail_home), what="the loop bounce")[0]
    assert b"loops back to myself" in bounce
    assert selfish.messages == []


def test_lesser_mx_greeting_with_our_name_is_skipped(mail_home: Home,
                                                    send_service: SendService,
                                                    dns_server: DnsServer,
                                                    make_sink) -> None:
    selfish = make_sink(ehlo_name=HOSTNAME.upper() + ".")
    good = make_sink()
    dns_server.add("far.test", "MX", "10 dead.far.test.", "20 selfish.far.test.",
                   "30 good.far.test.")
    dns_server.add("dead.far.test", "A", _loopback_address())  # refused
    dns_server.add("selfish.far.test", "A", selfish.host)
    dns_server.add("good.far.test", "A", good.host)
    _use_dns(mail_home, dns_server)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: good.messages, what="delivery to the next MX")
    assert selfish.messages == [] and selfish.connections >= 1


def test_a_double_bounce_gets_the_marker_and_a_returned_one_is_discarded(
        mail_home: Home, send_service: SendService, sink: SmtpSink) -> None:
    sink.replies["gone@far.test"] = "550 5.1.1 gone"
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    send_service.start()
    # A bounce (from <>) that fails: a double bounce goes to postmaster, with the marker.
    inject(mail_home, ["gone@far.test"], sender="", subject="a bounce")
    double = wait_until(lambda: maildir_messages(mail_home, "postmaster@example.test"),
                        what="the double bounce")[0]
    assert b"\nX-Mailyard-Double-Bounce: mx.example.test\n" in double
    # That double bounce coming back from the network (sent from <>) and failing again is
    # dropped, not bounced to postmaster once more.
    returned = double.replace(b"\n", b"\r\n")
    qid = inject(mail_home, ["gone@far.test"], sender="", body=returned)
    wait_until(lambda: f"triple bounce: discarding bounce/{qid}" in read_send_log(mail_home),
               what="the returned double bounce to be discarded")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    assert len(maildir_messages(mail_home, "postmaster@example.test")) == 1
