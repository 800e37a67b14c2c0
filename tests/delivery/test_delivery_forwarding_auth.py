"""Mail an alias forwards (issue 18.2): its envelope sender rewritten with SRS (SPF passes for
us at the next hop), an ARC set sealing what we found that Perl's Mail::DKIM::ARC verifies,
and a bounce to the SRS address passed back to the original sender."""

from __future__ import annotations

from send_harness import SendService, SmtpSink, wait_until
from tests.dkim_support import publish, verify_arc
from tests.dns_support import running_dns_server

from mailyard.home import Home
from mailyard.mailauth import service
from mailyard.mailauth.records import zone_text
from mailyard.queue import Envelope, Queue
from mailyard.queue.envelope import TRACE_HEADERS
from mailyard.store import accounts
from mailyard.store.settings_store import set_setting

MESSAGE = (b"From: Alice <alice@remote.test>\r\nTo: sales@example.test\r\n"
           b"Subject: for the alias\r\nDate: Wed, 02 Dec 2026 03:00:00 +0000\r\n"
           b"Message-ID: <fwd.1@remote.test>\r\n\r\nPlease forward me.\r\n")
RESULTS = ("Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=remote.test; "
           "dkim=none; dmarc=none header.from=remote.test\r\n")


def arrive(home: Home, recipient: str, sender: str = "alice@remote.test",
           data: bytes = MESSAGE) -> str:
    with Queue(home.queue_dir).open_message() as w:
        w.write(data)
        return w.commit(Envelope(sender=sender, recipients=[recipient], client_ip="192.0.2.9",
                                 extra={TRACE_HEADERS: RESULTS}))


def test_a_forwarded_copy_gets_srs_and_a_valid_arc_set(mail_home: Home,
                                                       send_service: SendService,
                                                       sink: SmtpSink) -> None:
    accounts.add_alias(mail_home, "sales@example.test", ["partner@far.test"])
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    arrive(mail_home, "sales@example.test")
    wait_until(lambda: sink.messages, what="the forwarded copy at the next hop")
    [got] = sink.messages
    assert got.recipients == ["partner@far.test"]
    assert got.sender.startswith("SRS0=") and got.sender.endswith("=remote.test=alice"
                                                                 "@mx.example.test")
    assert got.data.startswith(b"ARC-Seal: i=1; ") or b"\r\nARC-Seal: i=1;" in got.data
    with running_dns_server() as dns:
        publish(dns, zone_text(service.domain_records(mail_home, "example.test")))
        assert verify_arc(dns, got.data).startswith("pass"), verify_arc(dns, got.data)

    # the next hop bounces it: the bounce to the SRS address goes back to alice
    bounce = (b"From: MAILER-DAEMON@far.test\r\nTo: " + got.sender.encode() +
              b"\r\nSubject: failure notice\r\n\r\nSorry.\r\n")
    arrive(mail_home, got.sender, sender="", data=bounce)
    try:
        wait_until(lambda: len(sink.messages) == 2, what="the bounce passed back to alice")
    except AssertionError:
        raise AssertionError("\n".join(send_service.log_lines()[-15:])) from None
    back = sink.messages[1]
    assert back.recipients == ["alice@remote.test"] and back.sender == ""


def test_a_forged_srs_address_is_refused(mail_home: Home, send_service: SendService,
                                         sink: SmtpSink) -> None:
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    arrive(mail_home, "SRS0=AAAA=AB=victim.test=bob@mx.example.test", sender="",
           data=b"Subject: x\r\n\r\nspam\r\n")
    log = send_service.log_lines

    def failed() -> bool:
        return any("failure:" in line and "hash_is_not_one_of_ours" in line for line in log())

    wait_until(failed, what="the forged SRS address refused")
    assert sink.messages == []
