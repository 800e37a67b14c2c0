"""Fixtures for delivery tests: a node home the send service can use, the service as a real
subprocess, an SMTP sink and a DNS server on loopback (see send_harness.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dnslib.server
import pytest
from send_harness import (
    DnsServer,
    SendService,
    SmtpSink,
    ZoneResolver,
    open_home_to_mail_owner,
    start_sink,
)

from mailyard.home import Home
from mailyard.queue import Queue
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting


@pytest.fixture
def mail_home(home: Home) -> Home:
    """A home with domain example.test, mailboxes joe@ and postmaster@, and the double bounce
    mailbox on that domain; the send service can run in it."""
    accounts.add_domain(home, "example.test")
    accounts.add_mailbox(home, "joe@example.test", "secret-joe-1")
    accounts.add_mailbox(home, "postmaster@example.test", "secret-pm-1")
    set_setting(home, "bounce.host", "example.test")
    set_setting(home, "bounce.double_host", "example.test")
    dispose_all()
    Queue(home.queue_dir)
    open_home_to_mail_owner(home)
    return home


@pytest.fixture
def send_service(mail_home: Home) -> Iterator[SendService]:
    service = SendService(mail_home)
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    s, stop = start_sink()
    try:
        yield s
    finally:
        stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    resolver = ZoneResolver()
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = dnslib.server.DNSServer(resolver, port=port, address="127.0.0.1",
                                         logger=dnslib.server.DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
        try:
            server.start_thread()
            break
        except OSError:
            continue
    else:
        raise RuntimeError("no UDP port for the DNS server")
    try:
        yield DnsServer(resolver, port)
    finally:
        server.stop()
