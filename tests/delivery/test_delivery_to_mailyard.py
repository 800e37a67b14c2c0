"""mailyard delivering to mailyard over STARTTLS (issue 16's interoperability list): one node's
send service hands a batch of messages to another node's smtp service, TLS required by the
sender's policy; every message must arrive."""

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
    free_port_base,
    inject,
    maildir_messages,
    open_home_to_mail_owner,
    queue_empty,
    read_send_log,
    wait_until,
)

from mailyard.home import Home
from mailyard.nodeinit import init_home
from mailyard.queue import Queue
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting

MESSAGES = 30


@pytest.fixture
def far_home() -> Iterator[Home]:
    """A second node, mx.far.test, with the mailbox bob@far.test."""
    base = Path(tempfile.mkdtemp(prefix="mailyard-far-test-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        home, _ = init_home(base / "node", "mx.far.test", port_base=free_port_base())
        accounts.add_domain(home, "far.test")
        accounts.add_mailbox(home, "bob@far.test", "secret-bob-1")
        dispose_all()
        Queue(home.queue_dir)
        open_home_to_mail_owner(home)
        yield home
    finally:
        dispose_all()
        shutil.rmtree(base, ignore_errors=True)


def test_send_delivers_every_message_to_a_mailyard_smtp_over_starttls(
        mail_home: Home, send_service: SendService, far_home: Home) -> None:
    far_smtp, far_send = SmtpService(far_home), SendService(far_home)
    try:
        far_smtp.start()
        far_send.start()
        set_setting(mail_home, "send.smtp_routes", [f"far.test:127.0.0.1:{far_smtp.port}"])
        set_setting(mail_home, "send.tls_policy", ["127.0.0.1 encrypt"])
        dispose_all()
        for n in range(MESSAGES):
            inject(mail_home, ["bob@far.test"], subject=f"number {n}")
        send_service.start()
        got = wait_until(lambda: len(maildir_messages(far_home, "bob@far.test")) >= MESSAGES
                         and maildir_messages(far_home, "bob@far.test"),
                         what="every message in the far mailbox")
        subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0] for m in got)
        assert subjects == sorted(f"number {n}".encode() for n in range(MESSAGES))
        wait_until(lambda: queue_empty(mail_home), what="the sending queue to empty")
        successes = [line for line in read_send_log(mail_home) if ": success: " in line]
        assert len(successes) == MESSAGES
        assert all(line.endswith("/TLS:_TLSv1.3_unverified/") for line in successes)
    finally:
        far_send.kill()
        far_smtp.kill()
