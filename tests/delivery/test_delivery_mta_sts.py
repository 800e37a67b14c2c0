"""MTA-STS (issue 18.3) against a policy server on loopback (HTTPS on port 443, a test CA
given through send.tls_ca_file, so verification is on): under `enforce` mail goes only to a
named MX over TLS verified for its name, and anything less is a deferral, never clear text."""

from __future__ import annotations

import http.server
import random
import ssl
import threading
from collections.abc import Iterator

import pytest
from send_harness import DnsServer, SendService, SmtpSink, inject, read_send_log, start_sink, wait_until
from tls_certs import TestCa

from mailyard.home import Home
from mailyard.store.settings_store import set_setting

DOMAIN = "far.test"


def _loopback() -> str:
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


class PolicyServer:
    """https://mta-sts.far.test/.well-known/mta-sts.txt on a loopback address of its own."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.policy = ""
        self.content_type = "text/plain"
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                owner.fetches += 1
                body = owner.policy.encode()
                ok = self.path == "/.well-known/mta-sts.txt"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if ok else b"")

            def log_message(self, *args: object) -> None:
                pass

        for _ in range(20):
            self.address = _loopback()
            try:
                self.httpd = http.server.ThreadingHTTPServer((self.address, 443), Handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no loopback address free for port 443")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def policy_server(ca: TestCa) -> Iterator[PolicyServer]:
    server = PolicyServer(ca.server_context(f"mta-sts.{DOMAIN}"))
    yield server
    server.stop()


@pytest.fixture
def mx_sinks() -> Iterator[object]:
    stops: list = []

    def make(**kw: object) -> SmtpSink:
        for _ in range(20):
            try:
                s, stop = start_sink(_loopback(), 25, **kw)
            except (AssertionError, OSError):
                continue
            stops.append(stop)
            return s
        raise RuntimeError("no loopback address free for port 25")

    yield make
    for stop in stops:
        stop()


def _setup(home: Home, dns: DnsServer, ca: TestCa, policy_server: PolicyServer, sink: SmtpSink,
           mode: str = "enforce", mx_pattern: str = f"mx.{DOMAIN}") -> None:
    dns.add(DOMAIN, "MX", f"10 mx.{DOMAIN}.")
    dns.add(f"mx.{DOMAIN}", "A", sink.host)
    dns.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=20261202"')
    dns.add(f"mta-sts.{DOMAIN}", "A", policy_server.address)
    policy_server.policy = f"version: STSv1\nmode: {mode}\nmx: {mx_pattern}\nmax_age: 86400\n"
    set_setting(home, "smtp.dns_resolver", dns.setting)
    set_setting(home, "send.tls_ca_file", str(ca.ca_file))


def _results(home: Home) -> list[str]:
    return [line for line in read_send_log(home) if line.startswith("delivery ") and ": " in line]


def test_enforce_delivers_over_verified_tls(mail_home: Home, send_service: SendService,
                                            dns_server: DnsServer, ca: TestCa,
                                            policy_server: PolicyServer, mx_sinks) -> None:
    sink = mx_sinks(starttls_context=ca.server_context(f"mx.{DOMAIN}"))
    _setup(mail_home, dns_server, ca, policy_server, sink)
    send_service.start()
    inject(mail_home, [f"bob@{DOMAIN}"])
    wait_until(lambda: sink.messages, what="the message at the MX")
    result = wait_until(lambda: _results(mail_home), what="the delivery result")[0]
    assert ": success: " in result and "TLS:_TLSv1.3_verified" in result, result
    assert policy_server.fetches == 1
    assert (mail_home.var_dir / "mta-sts" / f"{DOMAIN}.json").exists()


def test_enforce_never_falls_back_to_clear_text(mail_home: Home, send_service: SendService,
                                                dns_server: DnsServer, ca: TestCa,
                                                policy_server: PolicyServer, mx_sinks) -> None:
    plain = mx_sinks()  # offers no STARTTLS at all
    _setup(mail_home, dns_server, ca, policy_server, plain)
    send_service.start()
    inject(mail_home, [f"bob@{DOMAIN}"])
    result = wait_until(lambda: _results(mail_home), what="the delivery result")[0]
    assert ": deferral: " in result and "does_not_offer_STARTTLS" in result, result
    assert "MTA-STS:_far.test_enforces_verified_TLS" in result
    assert plain.messages == []


def test_enforce_defers_for_a_certificate_of_another_host(mail_home: Home,
                                                          send_service: SendService,
                                                          dns_server: DnsServer, ca: TestCa,
                                                          policy_server: PolicyServer,
                                                          mx_sinks) -> None:
    wrong = mx_sinks(starttls_context=ca.server_context("other.example"))
    _setup(mail_home, dns_server, ca, policy_server, wrong)
    send_service.start()
    inject(mail_home, [f"bob@{DOMAIN}"])
    result = wait_until(lambda: _results(mail_home), what="the delivery result")[0]
    assert ": deferral: " in result and "TLS_with" in result and "MTA-STS" in result, result
    assert wrong.messages == []


def test_enforce_defers_when_the_policy_names_no_mx(mail_home: Home, send_service: SendService,
                                                    dns_server: DnsServer, ca: TestCa,
                                                    policy_server: PolicyServer,
                                                    mx_sinks) -> None:
    sink = mx_sinks(starttls_context=ca.server_context(f"mx.{DOMAIN}"))
    _setup(mail_home, dns_server, ca, policy_server, sink, mx_pattern="*.elsewhere.test")
    send_service.start()
    inject(mail_home, [f"bob@{DOMAIN}"])
    result = wait_until(lambda: _results(mail_home), what="the delivery result")[0]
    assert ": deferral: " in result and "names_none_of_its_MX_hosts" in result, result
    assert sink.connections == 0


def test_testing_mode_only_reports(mail_home: Home,
                                                              send_service: SendService,
                                                              dns_server: DnsServer, ca: TestCa,
                                                              policy_server: PolicyServer,
                                                              mx_sinks) -> None:
    plain = mx_sinks()
    _setup(mail_home, dns_server, ca, policy_server, plain, mode="testing")
    send_service.start()
    inject(mail_home, [f"bob@{DOMAIN}"])
    wait_until(lambda: plain.messages, what="the message, in clear: testing only reports")
