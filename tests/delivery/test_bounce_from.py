"""Bounce From (guide 4.7) by its effect: the bounce a running send service writes comes from
the address the setting names, and a change reaches the running service on a reload."""

from __future__ import annotations

import email
import signal

from send_harness import (
    SendService,
    SmtpSink,
    inject,
    maildir_messages,
    queue_empty,
    wait_until,
)

from mailyard.home import Home
from mailyard.store.settings_store import set_setting


def _bounces(home: Home) -> list[bytes]:
    return [m for m in maildir_messages(home, "joe@example.test") if b"multipart/report" in m]


def _status_lines(service: SendService) -> int:
    return sum(" status: " in f" {line}" for line in service.log_lines())


def _from(message: bytes) -> str:
    return str(email.message_from_bytes(message)["From"])


def test_changing_bounce_from_changes_the_bounces_from(mail_home: Home,
                                                       send_service: SendService,
                                                       sink: SmtpSink) -> None:
    sink.default_rcpt_reply = "550 5.1.1 no such user here"
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    send_service.start()
    inject(mail_home, ["nobody@far.test"], sender="joe@example.test", subject="first")
    [first] = wait_until(lambda: _bounces(mail_home), what="the first bounce")
    assert _from(first) == "Mail Delivery System <mailer-daemon@example.test>"

    set_setting(mail_home, "bounce.from", "postoffice")
    wait_until(lambda: queue_empty(mail_home), what="the queue to empty")
    before = _status_lines(send_service)  # the scheduler writes one after it reloaded
    send_service.signal(signal.SIGHUP)
    wait_until(lambda: _status_lines(send_service) > before, what="the send service to reload")
    inject(mail_home, ["nobody@far.test"], sender="joe@example.test", subject="second")
    bounces = wait_until(lambda: len(_bounces(mail_home)) == 2 and _bounces(mail_home),
                         what="the second bounce")
    second = next(b for b in bounces if b is not first and b != first)
    assert _from(second) == "Mail Delivery System <postoffice@example.test>"
