"""Local delivery by the send service: Maildir, headers, aliases, loops, unknown users."""

from __future__ import annotations

from send_harness import (
    SendService,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    wait_until,
)

from mailyard.home import Home
from mailyard.store import accounts


def test_message_to_a_mailbox_lands_in_its_maildir(mail_home: Home,
                                                   send_service: SendService) -> None:
    send_service.start()
    qid = inject(mail_home, ["joe@example.test"], subject="first")
    msgs = wait_until(lambda: maildir_messages(mail_home, "joe@example.test"), what="delivery")
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.startswith(b"Return-Path: <alice@remote.test>\nDelivered-To: joe@example.test\n")
    assert b"Subject: first\n" in msg and b"\r\n" not in msg
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    assert f"new msg {qid}" in log
    assert any(line.startswith(f"info msg {qid}: bytes ") and
               line.endswith("from <alice@remote.test> qp " + line.split(" qp ")[1])
               for line in log)
    start = next(line for line in log if line.startswith("starting delivery"))
    assert start.endswith(f": msg {qid} to local example.test-joe@example.test")
    number = start.split()[2].rstrip(":")
    (result,) = [line for line in log if line.startswith(f"delivery {number}: success: ")]
    # the report names the file written (for `mailyard trail`), after qmail-local's did line
    file = result.split("/maildir_INBOX_", 1)[1].rstrip("/")
    assert result.startswith(f"delivery {number}: success: did_1+0+0/maildir_INBOX_")
    assert maildir_messages(mail_home, "joe@example.test") == [
        (mail_home.maildir("joe@example.test") / "new" / file).read_bytes()]
    assert f"end msg {qid}" in log


def _bounces_in(home: Home, address: str) -> list[bytes]:
    return [m for m in maildir_messages(home, address) if b"multipart/report" in m]


def test_alias_forwards_with_delivered_to_and_keeps_a_copy(mail_home: Home,
                                                           send_service: SendService) -> None:
    accounts.add_mailbox(mail_home, "sales@example.test", "secret-sales-1")
    accounts.add_mailbox(mail_home, "ann@example.test", "secret-ann-1")
    accounts.add_alias(mail_home, "sales@example.test", ["ann@example.test", "joe@example.test"],
                       keep_copy=True)
    send_service.start()
    inject(mail_home, ["sales@example.test"], subject="offer")
    for who in ("ann", "joe", "sales"):
        wait_until(lambda who=who: maildir_messages(mail_home, f"{who}@example.test"),
                   what=f"delivery to {who}")
    ann = maildir_messages(mail_home, "ann@example.test")[0]
    assert ann.startswith(b"Return-Path: <alice@remote.test>\nDelivered-To: ann@example.test\n"
                          b"Delivered-To: sales@example.test\n")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    assert any(line.split(": ", 2)[-1].startswith("did_1+2+0/qp_") for line in log
               if line.startswith("delivery ") and ": success: " in line)


def test_unknown_local_user_is_bounced_to_the_sender(mail_home: Home,
                                                     send_service: SendService) -> None:
    send_service.start()
    qid = inject(mail_home, ["nobody@example.test"], sender="joe@example.test",
                 subject="to nobody")
    bounces = wait_until(lambda: _bounces_in(mail_home, "joe@example.test"), what="bounce")
    bounce = bounces[0]
    assert bounce.startswith(b"Return-Path: <>\n")
    assert b"From: Mail Delivery System <mailer-daemon@example.test>" in bounce
    assert b"Final-Recipient: rfc822; nobody@example.test" in bounce
    assert b"Status: 5.1.1" in bounce
    assert b"Content-Type: text/rfc822-headers" in bounce
    assert b"Subject: to nobody" in bounce
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    assert ("delivery 1: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/" in log)
    assert any(line.startswith(f"bounce msg {qid} qp ") for line in log)
    assert log.index(f"end msg {qid}") > next(
        i for i, line in enumerate(log) if line.startswith(f"bounce msg {qid}"))


def test_forwarding_loop_is_detected_and_bounced(mail_home: Home,
                                                 send_service: SendService) -> None:
    accounts.add_alias(mail_home, "ping@example.test", ["pong@example.test"])
    accounts.add_alias(mail_home, "pong@example.test", ["ping@example.test"])
    send_service.start()
    inject(mail_home, ["ping@example.test"], sender="joe@example.test", subject="loop")
    bounce = wait_until(lambda: _bounces_in(mail_home, "joe@example.test"), what="bounce")[0]
    assert b"looping" in bounce and b"Status: 5.4.6" in bounce
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    assert any("This_message_is_looping" in line for line in read_send_log(mail_home))


def test_failed_bounce_goes_to_the_double_bounce_mailbox(mail_home: Home,
                                                         send_service: SendService) -> None:
    send_service.start()
    inject(mail_home, ["nobody@example.test"], sender="ghost@example.test")
    double = wait_until(lambda: _bounces_in(mail_home, "postmaster@example.test"),
                        what="double bounce")[0]
    assert double.startswith(b"Return-Path: <#@[]>\n")
    assert b"Final-Recipient: rfc822; ghost@example.test" in double
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def test_double_bounce_is_discarded_with_a_log_line_when_disabled(
        mail_home: Home, send_service: SendService) -> None:
    from mailyard.store.settings_store import set_setting

    set_setting(mail_home, "bounce.double_enabled", False)
    send_service.start()
    inject(mail_home, ["nobody@example.test"], sender="ghost@example.test")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    assert any(line.startswith("double bounce: discarding bounce/") for line in log)
    assert _bounces_in(mail_home, "postmaster@example.test") == []


def test_bounce_of_a_double_bounce_is_discarded(mail_home: Home,
                                                send_service: SendService) -> None:
    from mailyard.store.settings_store import set_setting

    set_setting(mail_home, "bounce.double_to", "nosuchbox")
    send_service.start()
    inject(mail_home, ["nobody@example.test"], sender="ghost@example.test")
    wait_until(lambda: queue_empty(mail_home) and any(
        line.startswith("triple bounce: discarding bounce/")
        for line in read_send_log(mail_home)), what="triple bounce")
