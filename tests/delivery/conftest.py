"""Fixtures for delivery tests: a node home the send service can use, the service as a real
subprocess, an SMTP sink and a DNS server on loopback (see send_harness.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from send_harness import (
    SendService,
    SmtpService,
    SmtpSink,
    free_port_base,
    open_home_to_mail_owner,
    start_sink,
)
from tls_certs import TestCa

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.queue import Queue
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting


@pytest.fixture
def mail_home() -> Iterator[Home]:
    """A home with domain example.test and mailboxes joe@ and postmaster@ (the double bounce
    mailbox), that the send service can use after dropping root.

    It lives outside pytest's base temp directory: pytest makes /tmp/pytest-of-root 0700
    again whenever a session starts, which would lock out a service running as the mail owner.
    """
    base = Path(tempfile.mkdtemp(prefix="mailyard-send-test-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        home, _ = init_home(base / "node", "mx.example.test", port_base=free_port_base())
        accounts.add_domain(home, "example.test")
        accounts.add_mailbox(home, "joe@example.test", "secret-joe-1")
        accounts.add_mailbox(home, "postmaster@example.test", "secret-pm-1")
        set_setting(home, "bounce.host", "example.test")
        set_setting(home, "bounce.double_host", "example.test")
        dispose_all()
        Queue(home.queue_dir)
        open_home_to_mail_owner(home)
        yield home
    finally:
        dispose_all()
        shutil.rmtree(base, ignore_errors=True)


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
def smtp_service(mail_home: Home) -> Iterator[SmtpService]:
    service = SmtpService(mail_home)
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def ca(mail_home: Home) -> TestCa:
    """A test CA whose file the send service can read (send.tls_ca_file)."""
    directory = mail_home.root / "test-ca"
    directory.mkdir()
    os.chmod(directory, 0o755)  # the send service reads the CA file as the mail owner
    made = TestCa(directory)
    os.chmod(made.ca_file, 0o644)
    return made
