"""Issue 16, the SMTP side: one canonical address, no backscatter, no loops on the defaults,
AUTH only after STARTTLS on port 25, and sender authorization, each against the running
service with a real client."""

from __future__ import annotations

import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_helpers import (
    JOE,
    JOE_PASSWORD,
    change,
    free_port_base,
    give_store_to_mail_owner,
    queue_entries,
)
from tests.delivery.send_harness import (
    SendService,
    inject,
    maildir_messages,
    open_home_to_mail_owner,
    queue_empty,
    start_sink,
    wait_until,
)

from mailyard.home import Home
from mailyard.settings.types import SettingError
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import load_settings

MESSAGE = b"From: a@remote.test\r\nTo: joe@example.org\r\nSubject: hello\r\n\r\nHi.\r\n"
MAILYARD = [sys.executable, "-m", "mailyard"]


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the node's certificate is self-signed
    return ctx


def received_headers(count: int) -> bytes:
    return b"".join(b"Received: from hop%d.test by hop%d.test; Tue, 1 Dec 2026 00:00:00 +0000"
                    b"\r\n" % (i, i + 1) for i in range(count))


# ---- item 6: one canonical form of an address ----------------------------------------------------


def test_a_quoted_local_part_with_a_space_is_refused_at_a_local_domain(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("a@remote.test")
        code, text = s.rcpt('" joe"@example.org')
        assert (code, text) == (550, b'5.1.1 <" joe"@example.org>: no such mailbox here')
        # Equivalent to the dot-atom: the same mailbox, queued in its canonical spelling.
        assert s.rcpt('"joe"@example.org')[0] == 250
        assert s.data(MESSAGE)[0] == 250
    svc.wait_log("rule=NO_SUCH_USER")
    [(envelope, _data)] = queue_entries(node)
    assert envelope["recipients"] == [JOE]
    assert not (node.mail_dir / "example.org" / " joe").exists()


def test_the_space_trick_does_not_pass_an_exact_blacklist_entry(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.inbound_blacklist": "joe@example.org"})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("a@remote.test")
        assert s.rcpt(JOE)[0] == 553
        assert s.rcpt('"joe"@example.org')[0] == 553  # the same address, so the same entry
        assert s.rcpt('" joe"@example.org')[0] == 550
        assert s.docmd("RCPT", "TO:<joe @example.org>")[0] == 501  # a space outside quotes
    assert queue_entries(node) == []


def test_a_quoted_local_part_keeps_its_quotes_when_relayed(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")  # loopback is a relay network by default
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("joe@example.org")
        assert s.rcpt('" joe"@far.test')[0] == 250
        assert s.rcpt('"fred"@Far.Test')[0] == 250
        assert s.data(MESSAGE)[0] == 250
    [(envelope, _data)] = queue_entries(node)
    assert envelope["recipients"] == ['" joe"@far.test', "fred@far.test"]


# ---- item 7: backscatter -------------------------------------------------------------------------


def test_a_disabled_mailbox_is_refused_at_rcpt(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    accounts.set_mailbox_active(node, JOE, False)
    dispose_all()
    give_store_to_mail_owner(node)
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("forged@victim.test")
        assert s.rcpt(JOE) == (550, b"5.2.1 <joe@example.org>: this mailbox is disabled and "
                                    b"takes no mail")
    svc.wait_log("rule=MAILBOX_DISABLED value=joe@example.org reply=550 5.2.1")  # by the parent
    assert queue_entries(node) == []


# ---- item 2: no loops on the defaults ------------------------------------------------------------


def test_the_hostname_is_a_local_domain_even_without_a_domain_row(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")  # hostname and default domain are mx.example.test, which has no domain row
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("joe@example.org")  # from a relay network: relaying would be allowed
        assert s.rcpt("nobody@mx.example.test")[0] == 550
        assert s.rcpt("nobody@MX.example.test")[0] == 550
    assert queue_entries(node) == []
    assert "mx.example.test" in accounts.local_domains(node)


def test_postmaster_without_a_mailbox_is_deferred_never_relayed(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")  # a home made without `mailyard init`: no postmaster mailbox anywhere
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("")
        code, text = s.rcpt("postmaster@mx.example.test")
        assert code == 451 and text.startswith(b"4.3.5 ")
        assert s.rcpt("postmaster")[0] == 451
    assert queue_entries(node) == []


@pytest.fixture
def cli_node() -> Iterator[Home]:
    """A home made by `mailyard init` (so with its postmaster mailbox), plus joe@example.org."""
    root = Path(tempfile.mkdtemp(prefix="mailyard-smtp-test-"))
    os.chmod(root, 0o755)
    base = free_port_base()
    done = subprocess.run([*MAILYARD, "--home", str(root / "node"), "init", "--hostname",
                           "mx.example.test", "--port-base", str(base)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "postmaster mail and double bounces go to postmaster@mx.example.test" in done.stdout
    home = Home.find(str(root / "node"))
    accounts.add_domain(home, "example.org")
    accounts.add_mailbox(home, JOE, JOE_PASSWORD)
    dispose_all()
    give_store_to_mail_owner(home)
    yield home
    dispose_all()
    shutil.rmtree(root, ignore_errors=True)


def test_init_gives_postmaster_a_mailbox_and_makes_it_the_double_bounce_target(cli_node: Home) -> None:
    settings = load_settings(cli_node)
    assert settings["server.postmaster"] == "postmaster@mx.example.test"
    assert (settings["bounce.double_to"], settings["bounce.double_host"]) == (
        "postmaster", "mx.example.test")
    box = accounts.get_mailbox(cli_node, "postmaster@mx.example.test")
    assert box is not None and box.active
    assert accounts.is_local_domain(cli_node, "mx.example.test")
    assert (cli_node.maildir("postmaster@mx.example.test") / "new").is_dir()


def test_postmaster_of_every_local_domain_reaches_the_named_mailbox(cli_node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(cli_node, {"smtp.relay_networks": "192.0.2.0/24"})  # a stranger on the Internet
    start("smtp", cli_node)
    with smtplib.SMTP("127.0.0.1", cli_node.port("smtp")) as s:
        s.ehlo()
        s.mail("")
        assert s.rcpt("postmaster@example.org")[0] == 250  # no postmaster mailbox of its own
        assert s.rcpt("PostMaster@mx.example.test")[0] == 250
        assert s.rcpt("postmaster@elsewhere.test")[0] == 554  # not ours: no relaying
        assert s.data(MESSAGE)[0] == 250
    [(envelope, _data)] = queue_entries(cli_node)
    assert envelope["recipients"] == ["postmaster@mx.example.test"]  # once, to the mailbox


def test_postmaster_mail_and_double_bounces_stay_on_the_node(cli_node: Home, start) -> None:  # type: ignore[no-untyped-def]
    """With every remote route pointing at a sink (the "network"), mail for postmaster and
    a double bounce end in the postmaster mailbox; only the bounce to the remote sender,
    which the sink refuses, ever leaves."""
    sink, stop_sink = start_sink(default_rcpt_reply="550 5.1.1 no such user")
    service = SendService(cli_node)
    try:
        change(cli_node, {"send.smtp_routes": [f":{sink.host}:{sink.port}"]})
        open_home_to_mail_owner(cli_node)
        start("smtp", cli_node)
        service.start()
        with smtplib.SMTP("127.0.0.1", cli_node.port("smtp")) as s:
            s.ehlo()
            s.mail("")
            assert s.rcpt("postmaster@example.org")[0] == 250
            assert s.data(MESSAGE)[0] == 250
        inject(cli_node, ["nobody@mx.example.test"], sender="alice@far.test")
        pm = "postmaster@mx.example.test"
        wait_until(lambda: len(maildir_messages(cli_node, pm)) == 2, what="two in postmaster")
        wait_until(lambda: queue_empty(cli_node), what="the queue to empty")
        assert [m.recipients for m in sink.messages] == []  # the 550 refused the one bounce
        texts = b"".join(maildir_messages(cli_node, pm))
        assert b"Subject: hello" in texts and b"alice@far.test" in texts
    finally:
        service.kill()
        stop_sink()


def test_init_takes_the_postmaster_the_administrator_names() -> None:
    root = Path(tempfile.mkdtemp(prefix="mailyard-smtp-test-"))
    root.chmod(0o755)  # init refuses a home its service users cannot reach
    try:
        done = subprocess.run([*MAILYARD, "--home", str(root / "node"), "init", "--hostname",
                               "mx.example.test", "--postmaster", "Hostmaster@Example.NET"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        home = Home.find(str(root / "node"))
        settings = load_settings(home)
        assert settings["server.postmaster"] == "hostmaster@example.net"
        assert (settings["bounce.double_to"], settings["bounce.double_host"]) == (
            "hostmaster", "example.net")
        assert accounts.get_mailbox(home, "hostmaster@example.net") is not None
        refused = subprocess.run([*MAILYARD, "--home", str(root / "other"), "init",
                                  "--hostname", "mx.example.test", "--postmaster", "no address"],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        assert "server.postmaster" in refused.stderr and "'no address'" in refused.stderr
    finally:
        dispose_all()
        shutil.rmtree(root, ignore_errors=True)


def test_the_postmaster_setting_is_validated() -> None:
    from mailyard.settings.registry import setting

    with pytest.raises(SettingError) as refused:
        setting("server.postmaster").parse("postmaster")
    assert "server.postmaster" in str(refused.value) and "user@domain" in str(refused.value)


@pytest.mark.parametrize(("hops", "code"), [(48, 250), (49, 554), (60, 554)])
def test_a_message_with_50_received_headers_ours_included_is_refused(node: Home, start, hops: int,  # type: ignore[no-untyped-def]
                                                                      code: int) -> None:
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("")
        s.rcpt(JOE)
        reply = s.data(received_headers(hops) + MESSAGE)
    assert reply[0] == code
    if code == 554:
        assert reply[1].startswith(b"5.4.6 Too many hops: %d Received headers" % (hops + 1))
        svc.wait_log("rule=TOO_MANY_HOPS")
        assert queue_entries(node) == []
    else:
        assert len(queue_entries(node)) == 1


def test_received_lines_in_the_body_are_not_hops(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("a@remote.test")
        s.rcpt(JOE)
        assert s.data(MESSAGE + received_headers(60))[0] == 250


# ---- item 10: AUTH only after STARTTLS on port 25 ------------------------------------------------


def test_port_25_offers_auth_only_after_starttls_by_default(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        assert s.docmd("AUTH", "PLAIN AGpvZUBleGFtcGxlLm9yZwB4")[0] == 538
        s.starttls(context=client_tls())
        s.ehlo()
        assert s.has_extn("auth")
        assert s.login(JOE, JOE_PASSWORD)[0] == 235


# ---- item 14: sender authorization ---------------------------------------------------------------


def test_a_logged_in_user_sends_only_as_addresses_it_owns(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    accounts.set_domain_owner(node, "example.org", "webuser")
    accounts.add_domain(node, "example.net", owner="webuser")
    accounts.add_domain(node, "example.com", owner="someoneelse")
    accounts.add_mailbox(node, "ann@example.org", "ann's password 1")
    accounts.add_alias(node, "sales@example.com", [JOE])
    dispose_all()
    give_store_to_mail_owner(node)
    svc = start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.login(JOE, JOE_PASSWORD)
        for sender, code in ((JOE, 250), ("Joe@Example.ORG", 250), ('"joe"@example.org', 250),
                             ("", 250), ("sales@example.com", 250),  # an alias of joe's
                             ("anything@example.net", 250),  # a domain of the same owner
                             ("ann@example.com", 553), ("boss@far.test", 553)):
            assert s.docmd("MAIL", f"FROM:<{sender}>")[0] == code, sender
            s.rset()
        code, text = s.docmd("MAIL", "FROM:<boss@far.test>")
        assert (code, text) == (553, b"5.7.1 <boss@far.test>: you are logged in as "
                                     b"joe@example.org, who may not send as this address")
    svc.wait_log("rule=SENDER_NOT_OWNED value=<boss@far.test> user=joe@example.org")
def test_sender_authorization_settings(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    accounts.set_domain_owner(node, "example.org", "webuser")
    accounts.add_domain(node, "example.net", owner="webuser")
    change(node, {"smtp.sender_owner_domains": "off"})
    svc = start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.login(JOE, JOE_PASSWORD)
        assert s.docmd("MAIL", "FROM:<anything@example.net>")[0] == 553
    svc.stop()
    change(node, {"smtp.sender_login_match": "off"})
    start("submission")
    with smtplib.SMTP_SSL("127.0.0.1", node.port("smtps"), context=client_tls()) as s:
        s.login(JOE, JOE_PASSWORD)
        assert s.docmd("MAIL", "FROM:<boss@far.test>")[0] == 250
