"""A whole node under supervision carries real mail: SMTP in, Maildir, IMAP and POP3 out,
sendmail, and the log tools reading the send log the node wrote."""

from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import ssl
import subprocess
from email.message import EmailMessage

from tests.conftest import VENV_BIN
from tests.waiting import wait_until

from mailyard.queue import admin as queue_admin


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(f"body of {subject}\n")
    return msg


def _wait_for_mail(home, address: str, subject: str, timeout: float = 60) -> None:
    new = home.maildir(address) / "new"

    def arrived() -> bool:
        return any(subject.encode() in path.read_bytes()
                   for path in (new.iterdir() if new.exists() else []))

    try:
        wait_until(arrived, timeout, f"{subject!r} in {address}'s Maildir")
    except AssertionError:
        raise AssertionError(f"{subject!r} never reached {address}; queue: "
                             f"{queue_admin.stats(home)}") from None


def _all_messages_ended(home) -> bool:
    """Every `new msg` of the send log has its `end msg` (the log tools then see it whole)."""
    log = (home.log_dir / "send" / "current").read_text()
    return log.count(" end msg ") >= max(1, log.count(" new msg "))


def _cli(env, *args, input_=None):
    return subprocess.run(args, env=env, input=input_, capture_output=True, text=True,
                          timeout=120)


def test_mail_from_smtp_is_read_over_imap_and_pop3(running_node):
    home = running_node
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as smtp:
        code, banner = smtp.ehlo("client.example.net")
        assert code == 250
        smtp.send_message(_message("someone@example.net", "ann@example.test", "over port 25"))
    _wait_for_mail(home, "ann@example.test", "over port 25")

    with imaplib.IMAP4("127.0.0.1", home.port("imap")) as imap:
        imap.starttls(_tls())
        imap.login("ann@example.test", "ann password")
        imap.select("INBOX")
        _, ids = imap.search(None, "SUBJECT", '"over port 25"')
        assert ids[0], "message not visible over IMAP"
        _, data = imap.fetch(ids[0].split()[0], "(RFC822)")
        raw = data[0][1]
        assert b"Return-Path: <someone@example.net>" in raw
        assert b"Delivered-To: ann@example.test" in raw
        assert b"Received: from client.example.net" in raw

    pop = poplib.POP3_SSL("127.0.0.1", home.port("pop3s"), context=_tls(), timeout=30)
    try:
        pop.user("ann@example.test")
        pop.pass_("ann password")
        count, _ = pop.stat()
        assert count == 1
        assert any(b"over port 25" in line for line in pop.retr(1)[1])
    finally:
        pop.quit()


def test_authenticated_submission_relays_to_a_local_mailbox(running_node):
    home = running_node
    with smtplib.SMTP("127.0.0.1", home.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=_tls())
        smtp.login("bob@example.test", "bob password")
        smtp.send_message(_message("bob@example.test", "ann@example.test", "via submission"))
    _wait_for_mail(home, "ann@example.test", "via submission")
    with smtplib.SMTP_SSL("127.0.0.1", home.port("smtps"), context=_tls(), timeout=30) as smtp:
        smtp.login("bob@example.test", "bob password")
        smtp.send_message(_message("bob@example.test", "ann@example.test", "via smtps"))
    _wait_for_mail(home, "ann@example.test", "via smtps")


def _relay_answer(home) -> int:
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("stranger.example.net")
        smtp.mail("spammer@example.net")
        code, _ = smtp.rcpt("victim@elsewhere.example")
        local, _ = smtp.rcpt("ann@example.test")
        assert local == 250
        return code


def test_no_open_relay_for_strangers(running_node):
    from mailyard.services.apply_settings import change_settings

    home = running_node
    assert _relay_answer(home) == 250  # 127.0.0.1 is a relay network by default
    result = change_settings(home, {"smtp.relay_networks": ""})
    assert "smtp" in result.reloaded

    def refused() -> int:  # the service reloads on SIGHUP, a moment later
        code = _relay_answer(home)
        return 0 if code == 250 else code

    code = wait_until(refused, 30, "the relay refusal after the reload")
    assert 500 <= code < 600


def test_a_setting_changed_from_the_cli_changes_what_clients_see(running_node, cli_env):
    out = _cli(cli_env, str(VENV_BIN / "mailyard"), "settings", "set", "smtp.greeting",
               "welcome to the yard")
    assert out.returncode == 0, out.stderr
    assert "smtp" in out.stdout  # reloaded

    def greeting() -> bytes:
        smtp = smtplib.SMTP(timeout=30)
        _, text = smtp.connect("127.0.0.1", running_node.port("smtp"))
        smtp.quit()
        return text

    wait_until(lambda: b"welcome to the yard" in greeting(), 30, "the new greeting")


def test_sendmail_and_the_log_tools_over_the_nodes_own_send_log(running_node, cli_env):
    home = running_node
    sent = _cli(cli_env, str(VENV_BIN / "sendmail"), "-t", "-i",
                input_="To: bob@example.test\nSubject: from cron\n\nhello from sendmail\n")
    assert sent.returncode == 0, sent.stderr
    _wait_for_mail(home, "bob@example.test", "from cron")
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as smtp:
        smtp.send_message(_message("friend@example.net", "ann@example.test", "for the report"))
    _wait_for_mail(home, "ann@example.test", "for the report")
    # the send log's `end msg` follows the delivery into the Maildir
    wait_until(lambda: _all_messages_ended(home), what="every message's end msg in the send log")
    py = str(VENV_BIN / "python")
    pipeline = (f"{py} -m mailyard.logtools qmail-last-x '1 hour' | "
                f"{py} -m mailyard.logtools xrcpt ann@example.test | "
                f"{py} -m mailyard.logtools show-all-detail")
    out = subprocess.run(["sh", "-c", pipeline], env=cli_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert any("friend@example.net" in ln and "ann@example.test" in ln for ln in lines), \
        out.stdout
    assert not any("bob@example.test" in ln.split()[4:5] for ln in lines)
    top = subprocess.run(["sh", "-c", f"{py} -m mailyard.logtools qmail-last-x '1 hour' | "
                                      f"{py} -m mailyard.logtools xuser web1 | "
                                      f"{py} -m mailyard.logtools top-recipients --json"],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert top.returncode == 0, top.stderr
    assert "ann@example.test" in top.stdout and "bob@example.test" in top.stdout
    uid_line = [ln for ln in (home.log_dir / "send" / "current").read_text().splitlines()
                if f"uid {os.getuid()}" in ln]
    assert uid_line, "sendmail's caller uid is missing from the send log"
