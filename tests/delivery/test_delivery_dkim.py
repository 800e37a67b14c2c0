"""DKIM signing as mail leaves (issue 18.1): a message a logged-in user submitted reaches the
remote server signed for its domain, and Perl's Mail::DKIM verifies it against the record
`mailyard dns records` prints; a message from outside is passed on unsigned."""

from __future__ import annotations

from send_harness import SendService, SmtpSink, queue_empty, read_send_log, wait_until
from tests.dkim_support import publish, verify
from tests.dns_support import running_dns_server

from mailyard.home import Home
from mailyard.mailauth import service
from mailyard.mailauth.records import zone_text
from mailyard.queue import Envelope, Queue
from mailyard.store.settings_store import set_setting

MESSAGE = (b"From: Joe <joe@example.test>\r\nTo: friend@far.test\r\nSubject: signed on the way\r\n"
           b"Date: Wed, 02 Dec 2026 03:00:00 +0000\r\nMessage-ID: <dkim.1@example.test>\r\n\r\n"
           b"Hello from a submission client.\r\n.a leading dot\r\n")


def submit(home: Home, **envelope: object) -> str:
    with Queue(home.queue_dir).open_message() as w:
        w.write(MESSAGE)
        return w.commit(Envelope(sender="joe@example.test", recipients=["friend@far.test"],
                                 **envelope))  # type: ignore[arg-type]


def test_submitted_mail_leaves_signed_and_verifies(mail_home: Home, send_service: SendService,
                                                   sink: SmtpSink) -> None:
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    submit(mail_home, auth_user="joe@example.test", protocol="ESMTPSA")
    submit(mail_home, client_ip="192.0.2.7")  # from another server: not ours to sign
    wait_until(lambda: len(sink.messages) == 2, what="both messages at the sink")
    signed = next(m.data for m in sink.messages if m.data.startswith(b"DKIM-Signature:"))
    unsigned = [m.data for m in sink.messages if not m.data.startswith(b"DKIM-Signature:")]
    assert len(unsigned) == 1 and unsigned[0] == MESSAGE
    assert signed.endswith(MESSAGE) and b"d=example.test" in signed
    with running_dns_server() as dns:
        publish(dns, zone_text(service.domain_records(mail_home, "example.test")))
        assert verify(dns, signed)[0].split()[:2] == ["rsa-sha256", "pass"]
    wait_until(lambda: queue_empty(mail_home), what="the queue to empty")
    assert any("DKIM:_signed_for_example.test/" in line for line in read_send_log(mail_home))


def test_no_signature_when_signing_is_off(mail_home: Home, send_service: SendService,
                                          sink: SmtpSink) -> None:
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    set_setting(mail_home, "dkim.signing", False)
    send_service.start()
    submit(mail_home, auth_user="joe@example.test", protocol="ESMTPSA")
    wait_until(lambda: sink.messages, what="the message at the sink")
    assert sink.messages[0].data == MESSAGE


