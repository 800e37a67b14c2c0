"""The outbound TLS policy table (issue 16 item 13): none, may, encrypt, verify per next hop,
never silently clear text where TLS is required, and the TLS state of every delivery in the
send log. Against real TLS sinks with certificates made in the test."""

from __future__ import annotations

import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from send_harness import (
    DnsServer,
    SendService,
    SmtpSink,
    inject,
    queue_empty,
    read_send_log,
    start_sink,
    wait_until,
)
from tls_certs import TestCa

from mailyard.home import Home
from mailyard.store.settings_store import set_setting

RELAY = "relay.far.test"


@pytest.fixture
def sinks() -> Iterator[object]:
    stops: list = []

    def make(**kw: object) -> SmtpSink:
        s, stop = start_sink(**kw)
        stops.append(stop)
        return s

    yield make
    for stop in stops:
        stop()


def _route(home: Home, sink: SmtpSink, relay: str = "127.0.0.1") -> None:
    set_setting(home, "send.smtp_routes", [f"far.test:{relay}:{sink.port}"])


def _results(home: Home) -> list[str]:
    return [line for line in read_send_log(home)
            if line.startswith("delivery ") and ": " in line]


def test_encrypt_defers_when_starttls_is_not_offered(mail_home: Home,
                                                     send_service: SendService,
                                                     sinks) -> None:
    plain = sinks()
    _route(mail_home, plain)
    set_setting(mail_home, "send.tls_policy", ["127.0.0.1 encrypt"])
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    result = wait_until(lambda: _results(mail_home), what="a delivery result")[0]
    assert ": deferral: 127.0.0.1_does_not_offer_STARTTLS_and_the_TLS_policy" in result
    assert plain.messages == [] and plain.connections >= 1


def test_encrypt_defers_when_the_handshake_fails(mail_home: Home, send_service: SendService,
                                                 sinks) -> None:
    tls = sinks(starttls_context=_refusing_context())
    _route(mail_home, tls)
    set_setting(mail_home, "send.tls_default_policy", "encrypt")
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    result = wait_until(lambda: _results(mail_home), what="a delivery result")[0]
    assert ": deferral: TLS_with_127.0.0.1_failed_and_the_TLS_policy_for_this_destination" \
           "_is_encrypt" in result
    assert tls.messages == []


def _refusing_context() -> ssl.SSLContext:
    """A server context without a certificate: every handshake with it fails."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


def test_may_falls_back_to_clear_text_and_says_so(mail_home: Home, send_service: SendService,
                                                  sinks) -> None:
    tls = sinks(starttls_context=_refusing_context())
    _route(mail_home, tls)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: tls.messages, what="the clear-text delivery")
    assert tls.messages[0].tls is False
    assert any(": success: " in line and line.endswith("/TLS:_none/")
               for line in _results(mail_home))


def test_may_reports_unverified_tls(mail_home: Home, send_service: SendService, sinks,
                                    ca: TestCa) -> None:
    tls = sinks(starttls_context=ca.server_context("sink.test"))
    _route(mail_home, tls)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: tls.messages, what="the delivery")
    assert tls.messages[0].tls is True
    assert any(": success: " in line and line.endswith("/TLS:_TLSv1.3_unverified/")
               for line in _results(mail_home))


def _relay_by_name(home: Home, dns: DnsServer, sink: SmtpSink) -> None:
    dns.add(RELAY, "A", sink.host)
    set_setting(home, "smtp.dns_resolver", dns.setting)
    _route(home, sink, relay=RELAY)


def test_verify_delivers_over_a_valid_certificate(mail_home: Home, send_service: SendService,
                                                  sinks, ca: TestCa,
                                                  dns_server: DnsServer) -> None:
    tls = sinks(starttls_context=ca.server_context(RELAY))
    _relay_by_name(mail_home, dns_server, tls)
    set_setting(mail_home, "send.tls_policy", [f"{RELAY} verify"])
    set_setting(mail_home, "send.tls_ca_file", str(ca.ca_file))
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: tls.messages, what="the verified delivery")
    assert any(": success: " in line and line.endswith("/TLS:_TLSv1.3_verified/")
               for line in _results(mail_home))


@pytest.mark.parametrize("case", ["other CA", "wrong name"])
def test_verify_defers_on_a_bad_certificate(mail_home: Home, send_service: SendService,
                                            sinks, ca: TestCa, dns_server: DnsServer,
                                            case: str) -> None:
    if case == "other CA":
        context = TestCa(Path(ca.dir), name="someone else").server_context(RELAY)
    else:
        context = ca.server_context("elsewhere.test")
    tls = sinks(starttls_context=context)
    _relay_by_name(mail_home, dns_server, tls)
    set_setting(mail_home, "send.tls_policy", [f"{RELAY} verify"])
    set_setting(mail_home, "send.tls_ca_file", str(ca.ca_file))
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    result = wait_until(lambda: _results(mail_home), what="a delivery result")[0]
    assert ": deferral: TLS_with_127.0.0.1_failed_and_the_TLS_policy_for_this_destination" \
           "_is_verify" in result
    assert "certificate_verify_failed" in result
    assert tls.messages == []
    assert tls.connections == 1  # not tried again in clear


def test_none_never_starts_tls(mail_home: Home, send_service: SendService, sinks,
                               ca: TestCa) -> None:
    tls = sinks(starttls_context=ca.server_context("sink.test"))
    _route(mail_home, tls)
    set_setting(mail_home, "send.tls_policy", ["far.test encrypt", "127.0.0.1 none"])
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: tls.messages, what="the delivery")
    assert tls.messages[0].tls is False  # the relay's entry counts, not the domain's


def test_one_session_carries_several_messages_and_not_across_policies(
        mail_home: Home, send_service: SendService, sinks, ca: TestCa,
        dns_server: DnsServer) -> None:
    tls = sinks(starttls_context=ca.server_context(RELAY))
    _relay_by_name(mail_home, dns_server, tls)
    set_setting(mail_home, "send.tls_ca_file", str(ca.ca_file))
    set_setting(mail_home, "send.destination_concurrency", 1)  # one after the other
    for n in range(5):
        inject(mail_home, [f"user{n}@far.test"])
    send_service.start()
    wait_until(lambda: len(tls.messages) == 5, what="five messages")
    assert tls.connections == 1  # one session, five transactions
    assert all(m.tls for m in tls.messages)
    # The relay now requires verified TLS: the open (unverified) session is not reused.
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    before = _status_lines(mail_home)
    set_setting(mail_home, "send.tls_policy", [f"{RELAY} verify"])
    send_service.signal(signal.SIGHUP)
    wait_until(lambda: _status_lines(mail_home) > before, what="the reload")
    inject(mail_home, ["last@far.test"])
    wait_until(lambda: len(tls.messages) == 6, what="the message under verify")
    assert tls.connections == 2
    assert _results(mail_home)[-1].endswith("/TLS:_TLSv1.3_verified/")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def _status_lines(home: Home) -> int:
    return sum(line.startswith("status:") for line in read_send_log(home))
