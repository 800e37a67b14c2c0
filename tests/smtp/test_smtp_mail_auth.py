"""SPF, DKIM and DMARC of mail from other servers on port 25 (issue 18.2), against the
running smtp service and a DNS server on loopback: forged mail from a p=reject domain refused
at the end of DATA, genuine mail accepted with our Authentication-Results, a quarantine
delivered to the Spam folder, exempt recipients in a transaction of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smtp_helpers import JOE, RawClient, change, queue_entries, wait_until
from tests.delivery.send_harness import SendService
from tests.dns_support import DnsServer, running_dns_server

from mailyard.home import Home
from mailyard.mailauth.dkim_sign import sign
from mailyard.mailauth.forwarding import Forwarder
from mailyard.mailauth.records import quote_txt, split_txt
from mailyard.queue.envelope import QUARANTINE, TRACE_HEADERS
from mailyard.store.dkim_keys import SigningKey, new_key_pair
from mailyard.store.settings_store import load_settings

OUTSIDER = "127.0.0.66"  # not in the relay networks below: "another server"


@pytest.fixture
def dns(node: Home) -> Iterator[DnsServer]:
    with running_dns_server() as server:
        change(node, {"smtp.dns_resolver": server.setting,
                      "smtp.relay_networks": ["127.0.0.1/32"]})
        server.add("bank.test", "TXT", quote_txt("v=spf1 ip4:127.0.0.9 -all"))
        server.add("_dmarc.bank.test", "TXT", quote_txt("v=DMARC1; p=reject"))
        server.add("shop.test", "TXT", quote_txt("v=spf1 -all"))
        server.add("_dmarc.shop.test", "TXT", quote_txt("v=DMARC1; p=quarantine"))
        server.add("attacker.test", "TXT", quote_txt(f"v=spf1 ip4:{OUTSIDER} -all"))
        yield server


def message(author: str, extra: str = "") -> bytes:
    return (f"From: {author}\r\nTo: {JOE}\r\nSubject: checked\r\n{extra}"
            f"Date: Wed, 02 Dec 2026 03:00:00 +0000\r\nMessage-ID: <m.1@x.test>\r\n\r\n"
            f"Please pay this invoice.\r\n").encode()


def send(node: Home, sender: str, data: bytes, source: str = OUTSIDER,
         recipients: tuple[str, ...] = (JOE,)) -> list[bytes]:
    c = RawClient(node.port("smtp"), source=source)
    assert c.code() == 220
    c.send(b"EHLO mx.sender.test\r\n")
    c.reply()
    c.send(f"MAIL FROM:<{sender}>\r\n".encode())
    replies = [c.reply()]
    for rcpt in recipients:
        c.send(f"RCPT TO:<{rcpt}>\r\n".encode())
        replies.append(c.reply())
    c.send(b"DATA\r\n")
    replies.append(c.reply())
    if replies[-1].startswith(b"354"):
        c.send(data + b".\r\n")
        replies.append(c.reply())
    c.send(b"QUIT\r\n")
    c.close()
    return replies


def test_forged_mail_from_a_reject_domain_is_refused_at_end_of_data(node: Home, start,  # type: ignore[no-untyped-def]
                                                                    dns: DnsServer) -> None:
    svc = start("smtp")
    replies = send(node, "x@attacker.test", message("CEO <ceo@bank.test>"))
    assert replies[-1].startswith(b"550 5.7.1 Message refused: bank.test"), replies
    assert queue_entries(node) == []
    log = svc.wait_log("action=reject")
    assert "mailauth ip=127.0.0.66 spf=pass" in log and "dmarc=fail policy=reject" in log
    assert "rule=DMARC_REJECT" in log


def test_genuine_signed_mail_is_accepted_with_our_results(node: Home, start,  # type: ignore[no-untyped-def]
                                                          dns: DnsServer) -> None:
    start("smtp")
    pem, public = new_key_pair("rsa")
    dns.add("s1._domainkey.bank.test", "TXT",
            " ".join(quote_txt(p) for p in split_txt(f"v=DKIM1; k=rsa; p={public}")))
    body = message("CEO <ceo@bank.test>")
    signed = sign(body, [SigningKey("bank.test", "s1", "rsa", pem.encode())]) + body
    replies = send(node, "bounces@esp.test", signed)  # another envelope domain: DKIM aligns
    assert replies[-1].startswith(b"250 "), replies
    [(envelope, _data)] = queue_entries(node)
    results = envelope["extra"][TRACE_HEADERS]
    assert results.startswith("Authentication-Results: mx.example.test;")
    assert "dkim=pass header.d=bank.test" in results and "dmarc=pass" in results
    assert QUARANTINE not in envelope["extra"]


def test_quarantine_goes_to_the_spam_folder_with_the_results_on_top(node: Home, start,  # type: ignore[no-untyped-def]
                                                                    dns: DnsServer) -> None:
    start("smtp")
    forged = message("Shop <orders@shop.test>",
                     extra="Authentication-Results: mx.example.test; dmarc=pass\r\n")
    assert send(node, "x@attacker.test", forged)[-1].startswith(b"250 ")
    [(envelope, _)] = queue_entries(node)
    assert "shop.test" in envelope["extra"][QUARANTINE]
    send_service = SendService(node)
    send_service.start()
    try:
        spam = node.maildir(JOE) / ".Spam" / "new"
        wait_until(lambda: spam.is_dir() and any(spam.iterdir()), timeout=60,
                   what="the message in the Spam folder")
        [path] = list(spam.iterdir())
        text = path.read_bytes()
    finally:
        send_service.stop()
    head = text.split(b"\n\n", 1)[0]
    assert head.count(b"Authentication-Results:") == 1  # ours; the forged one is gone
    assert b"dmarc=fail" in head and b"dmarc=pass" not in head


def test_exempt_recipient_domains_come_in_their_own_transaction(node: Home, start,  # type: ignore[no-untyped-def]
                                                                dns: DnsServer) -> None:
    change(node, {"dmarc.exempt_domains": ["example.org"]})
    start("smtp")
    replies = send(node, "x@attacker.test", message("CEO <ceo@bank.test>"),
                   recipients=(JOE, "postmaster@mx.example.test"))
    assert replies[1].startswith(b"250") and replies[2].startswith(b"452 4.5.3"), replies
    assert replies[-1].startswith(b"250 ")  # joe's domain is exempt: not refused for DMARC


def test_relay_clients_are_not_checked(node: Home, start, dns: DnsServer) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    replies = send(node, "x@attacker.test", message("CEO <ceo@bank.test>"), source="127.0.0.1")
    assert replies[-1].startswith(b"250 ")
    [(envelope, _)] = queue_entries(node)
    assert TRACE_HEADERS not in envelope.get("extra", {})
    svc.wait_log("end ip=")  # every line of the session is in the log
    assert "mailauth" not in svc.log()


def test_a_bounce_to_our_srs_address_is_accepted_and_a_forged_one_refused(node: Home, start,  # type: ignore[no-untyped-def]
                                                                          dns: DnsServer) -> None:
    start("smtp")
    ours = Forwarder(node, load_settings(node)).sender_for("alice@remote.test")
    assert ours.endswith("@mx.example.test")
    c = RawClient(node.port("smtp"), source=OUTSIDER)
    assert c.code() == 220
    c.send(b"EHLO mx.far.test\r\nMAIL FROM:<>\r\n")
    c.reply()
    assert c.code() == 250
    c.send(f"RCPT TO:<{ours}>\r\n".encode())
    assert c.reply().startswith(b"250 ")
    c.send(b"RCPT TO:<SRS0=AAAA=AB=victim.test=bob@mx.example.test>\r\n")
    assert c.reply().startswith(b"550 5.1.1")
    c.close()
