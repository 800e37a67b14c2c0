"""The smtp service on a real port, spoken to by Python's smtplib and by swaks."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_helpers import (
    JOE,
    PYTHON,
    REPO,
    START_TIMEOUT,
    RawClient,
    Service,
    change,
    give_store_to_mail_owner,
    leftovers,
    queue_entries,
    wait_until,
)

from mailyard.home import Home
from mailyard.settings.types import SettingError
from mailyard.store.settings_store import set_setting

MESSAGE = b"From: a@remote.test\r\nTo: joe@example.org\r\nSubject: hello\r\n\r\nHi Joe.\r\n"


def test_smtplib_delivers_to_a_local_mailbox_durably(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp"), local_hostname="client.test") as s:
        code, banner = s.ehlo()
        assert code == 250
        for ext in (b"PIPELINING", b"SIZE 20971520", b"8BITMIME", b"ENHANCEDSTATUSCODES",
                    b"STARTTLS"):
            assert ext in banner.split(b"\n"), ext
        assert not s.has_extn("auth")  # by default only after STARTTLS (smtp.auth_mode)
        s.mail("a@remote.test")
        s.rcpt(JOE)
        code, text = s.data(MESSAGE + b".leading dot\r\n")
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    qid = text.decode().rsplit(" ", 1)[1]
    [(envelope, data)] = queue_entries(node)
    assert envelope["sender"] == "a@remote.test" and envelope["recipients"] == [JOE]
    assert envelope["client_ip"] == "127.0.0.1" and envelope["helo"] == "client.test"
    assert envelope["protocol"] == "ESMTP"
    assert (node.queue_dir / "todo" / qid).exists()
    assert data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test "
                           b"(mailyard) with ESMTP\r\n\tfor <joe@example.org>;")
    assert data.endswith(MESSAGE + b".leading dot\r\n")
    log = svc.wait_log(f"accepted qid={qid} ")
    assert "status: 1/20 connect ip=127.0.0.1" in log
    assert f"from=<a@remote.test> to=<{JOE}>" in log


def test_swaks_delivers_on_port_25(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{node.port('smtp')}",
                          "--from", "sender@remote.test", "--to", JOE, "--helo", "swaks.test",
                          "--body", "from swaks"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["recipients"] == [JOE] and b"from swaks" in data


def test_unknown_local_mailbox_is_refused(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("a@remote.test")
        assert s.rcpt("nobody@example.org") == (
            550, b"5.1.1 <nobody@example.org>: no such mailbox here")
    svc.wait_log("rule=NO_SUCH_USER value=nobody@example.org reply=550 5.1.1")
    assert queue_entries(node) == []


def test_an_unauthenticated_client_cannot_relay(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.relay_networks": "192.0.2.0/24"})  # loopback is no longer trusted
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        s.mail("a@remote.test")
        assert s.rcpt("victim@elsewhere.test")[0] == 554
        assert s.rcpt(JOE)[0] == 250  # our own domain is open to everyone
        tricks = ["joe%elsewhere.test@example.org", '"victim@elsewhere.test"@example.org',
                  "@example.org:victim@elsewhere.test", "elsewhere.test!victim@example.org",
                  "victim@elsewhere.test@example.org"]
        for trick in tricks:
            code, text = s.docmd("RCPT", f"TO:<{trick}>")  # as written, not re-quoted
            assert code == 553 and text.startswith(b"5.7.1"), (trick, text)
        s.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@remote.test", ["victim@elsewhere.test"], MESSAGE)
    svc.wait_log("rule=RELAY_DENIED value=victim@elsewhere.test")
    wait_until(lambda: svc.log().count("rule=RELAY_TRICK") == len(tricks),
               what="a log line for each trick")
    assert queue_entries(node) == []


def test_relay_networks_may_send_anywhere(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")  # default relay networks: loopback
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        assert s.sendmail("joe@example.org", ["friend@elsewhere.test"], MESSAGE) == {}
    [(envelope, _)] = queue_entries(node)
    assert envelope["recipients"] == ["friend@elsewhere.test"]


def test_greeting_and_hostname_settings(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.greeting": "mail.example.org Hello there",
                  "server.hostname": "mail.example.org"})
    start("smtp")
    c = RawClient(node.port("smtp"))
    assert c.reply() == b"220 mail.example.org Hello there ESMTP"
    c.send(b"EHLO x\r\n")
    assert c.reply().startswith(b"250-mail.example.org\r\n")
    c.close()


def test_settings_change_with_a_reload(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = RawClient(node.port("smtp"))
    assert c.reply() == b"220 mx.example.test ESMTP"
    c.close()
    change(node, {"smtp.greeting": "after reload", "smtp.message_size_mb": 3})
    svc.hup()
    c = RawClient(node.port("smtp"))
    assert c.reply() == b"220 after reload ESMTP"
    c.send(b"EHLO x\r\n")
    assert b"250-SIZE 3145728" in c.reply()
    c.close()


def test_connections_over_the_cap_are_told_421_at_once(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.max_connections": 2})
    svc = start("smtp")
    first, second = RawClient(node.port("smtp")), RawClient(node.port("smtp"))
    assert first.code() == 220 and second.code() == 220
    third = RawClient(node.port("smtp"))
    assert third.reply().startswith(b"421 4.7.0 mx.example.test too many connections")
    assert third.closed()
    first.send(b"QUIT\r\n")
    assert first.code() == 221
    first.close()
    wait_until(lambda: svc.log().count("end ip=") >= 2, what="the first session to end")
    fourth = RawClient(node.port("smtp"))
    assert fourth.code() == 220
    log = svc.log()
    assert "status: 3/2 connect" in log and "rule=TOO_MANY_CONNECTIONS" in log
    second.close()
    fourth.close()


def test_message_size_limit_is_enforced_while_streaming(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.message_size_mb": 1})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert s.esmtp_features["size"] == "1048576"
        big = MESSAGE + (b"x" * 998 + b"\r\n") * 1100  # 1.1 MB, no SIZE= given to the server
        s.esmtp_features.pop("size")  # so smtplib does not announce it and stream it all
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@remote.test", [JOE], big)
        assert (err.value.smtp_code, err.value.smtp_error[:5]) == (552, b"5.3.4")
        assert leftovers(node) == []
        assert s.sendmail("a@remote.test", [JOE], MESSAGE) == {}  # the session goes on
    assert len(queue_entries(node)) == 1


def test_declared_size_over_the_limit_is_refused_at_mail_from(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.message_size_mb": 1})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert s.mail("a@remote.test", ["SIZE=2000000"])[0] == 552


def test_inbound_blacklist(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.inbound_blacklist": "@spammer.test\nhated@example.org"})
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert s.mail("boss@spammer.test")[0] == 553
        assert s.mail("ok@remote.test")[0] == 250
        assert s.rcpt("hated@example.org")[0] == 553
    svc.wait_log("rule=INBOUND_BLACKLIST value=<boss@spammer.test>")
def test_outbound_blacklist_for_local_senders(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.outbound_blacklist": "*@forbidden.test"})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:  # loopback: a local user
        s.ehlo()
        s.mail(JOE)
        code, text = s.rcpt("anyone@forbidden.test")
        assert code == 553 and b"not allowed from this server" in text
        assert s.rcpt("anyone@allowed.test")[0] == 250


def test_bare_sender_gets_the_default_domain(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"server.default_domain": "example.org"})
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        assert s.sendmail("fred", [JOE], MESSAGE) == {}
    [(envelope, _)] = queue_entries(node)
    assert envelope["sender"] == "fred@example.org"


def test_primary_server_refuses_required_auth() -> None:
    from mailyard.settings.registry import setting

    with pytest.raises(SettingError) as err:
        setting("smtp.auth_mode").parse("auth_required/tls_required")
    assert "must not require" in str(err.value)


def test_auth_mode_change_takes_effect_after_restart(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert not s.has_extn("auth") and s.has_extn("starttls")  # the default: AUTH after TLS
    svc.stop()
    set_setting(node, "smtp.auth_mode", "auth_no/tls_no")
    start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        assert not s.has_extn("auth") and not s.has_extn("starttls")
        assert s.docmd("STARTTLS")[0] == 502
        assert s.docmd("AUTH", "PLAIN AGpvZUBleGFtcGxlLm9yZwB4")[0] == 502


def test_virus_scanning_without_clamd_defers_and_queues_nothing(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"virus.smtp_scanning": True})  # and no clamd running on this node
    svc = start("smtp")
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@remote.test", [JOE], MESSAGE)
    assert err.value.smtp_code == 451  # the sender keeps the message and tries again
    assert leftovers(node) == []
    svc.wait_log("rule=VIRUS_SCANNER_UNAVAILABLE")
def test_sigterm_tells_idle_clients_421_and_stops(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = RawClient(node.port("smtp"))
    assert c.code() == 220
    svc.proc.send_signal(15)
    assert c.reply().startswith(b"421 4.3.2 mx.example.test shutting down")
    assert svc.proc.wait(timeout=30) == 0
    svc.wait_log("stopped service=smtp")
    c.close()


def test_sigterm_lets_a_message_in_progress_finish(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = RawClient(node.port("smtp"))
    assert c.code() == 220
    c.send(b"EHLO x\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.org>\r\nDATA\r\n")
    assert [c.code() for _ in range(4)] == [250, 250, 250, 354]
    c.send(b"Subject: late\r\n\r\nfirst half\r\n")
    svc.proc.send_signal(15)
    svc.wait_log("stopping service=smtp")
    c.send(b"second half\r\n.\r\n")
    assert c.code() == 250
    assert svc.proc.wait(timeout=30) == 0
    [(_, data)] = queue_entries(node)
    assert data.endswith(b"first half\r\nsecond half\r\n")


def test_mailyard_settings_set_then_reload(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    env = dict(os.environ, MAILYARD_HOME=str(node.root))
    mailyard = str(Path(sys.executable).parent / "mailyard")
    done = subprocess.run([mailyard, "settings", "set", "smtp.max_connections", "1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    refused = subprocess.run([mailyard, "settings", "set", "smtp.auth_mode",
                              "auth_required/tls_required"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "must not require" in refused.stdout + refused.stderr
    give_store_to_mail_owner(node)  # root's CLI may have re-created SQLite's side files
    svc.hup()
    first = RawClient(node.port("smtp"))
    assert first.code() == 220
    second = RawClient(node.port("smtp"))
    assert second.code() == 421
    first.close()
    second.close()


def test_the_service_runs_and_queues_without_uvloop(node: Home) -> None:
    """uvloop is what `make run` installs; the service runs on asyncio's own loop without it
    (an import of it fails here, as where it is not installed)."""
    code = ("import sys; sys.modules['uvloop'] = None; "
            "from mailyard.home import Home; from mailyard.smtp import service; "
            "assert service.uvloop is None; "
            f"service.run_smtp(Home.find({str(node.root)!r}))")
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    svc = Service("smtp", node, proc)
    try:
        svc.wait_log(f"service=smtp pid={proc.pid} ", timeout=START_TIMEOUT)
        with smtplib.SMTP("127.0.0.1", node.port("smtp"), local_hostname="client.test") as s:
            assert s.ehlo()[0] == 250
            assert s.mail("a@remote.test")[0] == 250
            assert s.rcpt(JOE)[0] == 250
            code_, text = s.data(MESSAGE)
        assert code_ == 250 and text.startswith(b"2.0.0 Ok: queued as ")
        qid = text.decode().rsplit(" ", 1)[1]
        assert (node.queue_dir / "todo" / qid).exists()
        svc.wait_log(f"accepted qid={qid} ")
    finally:
        svc.stop()
