"""Outbound rate limits on the running smtp and submission services, with smtplib."""

from __future__ import annotations

import smtplib
import ssl

from smtp_helpers import JOE, JOE_PASSWORD, change, queue_entries

from mailyard.home import Home
from mailyard.smtp.ratetable import RateTable, held_keys
from mailyard.store.accounts import set_mailbox
from mailyard.store.db import dispose_all

MESSAGE = b"From: joe@example.org\r\nTo: friend@elsewhere.test\r\nSubject: out\r\n\r\nHello.\r\n"
REMOTE = "friend@elsewhere.test"


def logged_in(home: Home) -> smtplib.SMTP:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the node's certificate is self-signed
    s = smtplib.SMTP("127.0.0.1", home.port("submission"), timeout=60)
    s.starttls(context=ctx)
    s.login(JOE, JOE_PASSWORD)
    return s


def test_submission_over_its_hourly_limit_gets_451_naming_it(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"limits.messages_per_hour": 2, "limits.hold_when_over": True})
    svc = start("submission")
    with logged_in(node) as s:
        for _ in range(2):
            assert s.sendmail(JOE, [REMOTE], MESSAGE) == {}
        assert s.mail(JOE)[0] == 250
        code, text = s.rcpt(REMOTE)
        assert code == 451
        assert text.decode() == ("4.7.1 mailbox:joe@example.org is over its limit of 2 "
                                 "messages per hour; try again later")
        # mail to the node's own mailboxes is not outbound: never counted, never refused
        assert s.rcpt(JOE)[0] == 250
        s.rset()
    log = svc.wait_log("rule=RATE_LIMIT_MESSAGES")
    assert "rate-limit rule=messages key=mailbox:joe@example.org limit=2 count=2" in log
    assert len(queue_entries(node)) == 2
    assert held_keys(node) == ["mailbox:joe@example.org"]  # for the queue to hold its mail

    # the counts survive a restart of the service
    svc.stop()
    start("submission")
    with logged_in(node) as s:
        s.mail(JOE)
        assert s.rcpt(REMOTE)[0] == 451
        s.rset()
        # a mailbox's own limit overrides the node's
        set_mailbox(node, JOE, messages_per_hour=3)
        dispose_all()
        assert s.sendmail(JOE, [REMOTE], MESSAGE) == {}
        s.mail(JOE)
        assert s.rcpt(REMOTE)[0] == 451
        s.rset()
    counts, over = RateTable(node).report()
    assert counts["mailbox:joe@example.org"] == (3, 3)
    assert counts["domain:example.org"] == (3, 3)
    assert over["mailbox:joe@example.org"][1:3] == ["messages", 3]


def test_the_message_is_counted_at_the_end_of_data(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    """Two sessions pass RCPT while one place is left; the one that ends DATA second is
    told 451 then, and only the first message is queued."""
    change(node, {"limits.messages_per_hour": 1})
    start("submission")
    with logged_in(node) as first, logged_in(node) as second:
        for s in (first, second):
            assert s.mail(JOE)[0] == 250 and s.rcpt(REMOTE)[0] == 250
        assert first.data(MESSAGE)[0] == 250
        code, text = second.data(MESSAGE)
        assert code == 451 and b"over its limit of 1 messages per hour" in text
    assert len(queue_entries(node)) == 1


def test_recipients_per_hour_refuses_the_recipient_past_it(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"limits.recipients_per_hour": 2})
    start("submission")
    with logged_in(node) as s:
        s.mail(JOE)
        assert s.rcpt("a@elsewhere.test")[0] == 250
        assert s.rcpt("b@elsewhere.test")[0] == 250
        code, text = s.rcpt("c@elsewhere.test")
        assert code == 451 and text.startswith(b"4.7.1 mailbox:joe@example.org is over its "
                                               b"limit of 2 recipients per hour")
        assert s.data(MESSAGE)[0] == 250
    [(envelope, _)] = queue_entries(node)
    assert envelope["recipients"] == ["a@elsewhere.test", "b@elsewhere.test"]


def test_relay_network_clients_are_counted_by_address_inbound_mail_never(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"limits.messages_per_hour": 1})
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=60) as s:  # a relay network
        assert s.sendmail("app@example.org", [REMOTE], MESSAGE) == {}
        s.mail("app@example.org")
        code, text = s.rcpt(REMOTE)
        assert code == 451 and text.startswith(b"4.7.1 ip:127.0.0.1 is over its limit of 1")
        s.rset()
        for _ in range(3):  # to a local mailbox: not outbound, not counted
            assert s.sendmail("someone@elsewhere.test", [JOE], MESSAGE) == {}
    svc.wait_log("rate-limit rule=messages key=ip:127.0.0.1")
    counts, _ = RateTable(node).report()
    assert counts == {"ip:127.0.0.1": (1, 1), "domain:example.org": (1, 1)}
