"""A running node moved to another mail root: send delivers there and Dovecot serves it.

The node runs under supervision as `mailyard up` starts it (smtp, send and imap only); the
change is made while they run, as an administrator would, and must reach both without a
restart.
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

from mailyard.home import Home
from mailyard.mda.config import conf_path
from mailyard.queue import admin as queue_admin
from mailyard.services import control
from mailyard.services.apply_settings import change_settings
from mailyard.store.accounts import add_domain, add_mailbox

SERVICES = ("smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps", "spamd", "clamd",
            "freshclam", "panel")
WANTED = ("smtp", "send", "imap")
# Generous bound for a message to go through SMTP, the queue and send (well under a second
# here); polled, never asserted on.
DELIVERY_WAIT_SECONDS = 90


def _tls(home: Home) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(home.cert_file))


def _send(home: Home, to: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.net", to, subject
    msg.set_content(f"body of {subject}\n")
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("client.example.net")
        smtp.send_message(msg)


def _wait_for_file(new: Path, subject: str, home: Home) -> Path:
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while True:
        for path in new.iterdir() if new.is_dir() else []:
            if subject.encode() in path.read_bytes():
                return path
        assert time.monotonic() < deadline, (f"{subject!r} never reached {new}; queue: "
                                             f"{queue_admin.stats(home)}")
        time.sleep(0.2)


def test_delivery_and_imap_follow_a_mail_root_changed_while_they_run(home: Home):
    add_domain(home, "example.test")
    add_mailbox(home, "ann@example.test", "ann password 1")
    change_settings(home, {f"service.{name}.start_on_boot": name in WANTED
                           for name in SERVICES}, apply=False)
    root = home.root.parent / "mail-elsewhere"
    try:
        control.up(home, timeout=90)
        result = change_settings(home, {"mail.root": str(root)})
        assert result.problems == []
        assert {"send", "imap"} <= set(result.reloaded)
        assert f"mail_home = {root}/%d/%n" in conf_path(home).read_text()

        add_mailbox(home, "carol@example.test", "carol password 1")
        _send(home, "carol@example.test", "into the new root")
        delivered = _wait_for_file(root / "example.test" / "carol" / "Maildir" / "new",
                                   "into the new root", home)
        assert not (home.root / "mail" / "example.test" / "carol").exists()
        assert b"Delivered-To: carol@example.test" in delivered.read_bytes()

        with imaplib.IMAP4("127.0.0.1", home.port("imap"), timeout=30) as imap:
            imap.starttls(_tls(home))
            imap.login("carol@example.test", "carol password 1")
            imap.select("INBOX")
            _, found = imap.search(None, "SUBJECT", '"into the new root"')
            assert found[0], "Dovecot does not see the message delivered into the new root"
            _, data = imap.fetch(found[0].split()[0], "(RFC822)")
            assert b"body of into the new root" in data[0][1]
        # Dovecot keeps its index files beside the mail, in the new root as well.
        assert any((root / "example.test" / "carol" / "Maildir").glob("dovecot*"))
    finally:
        control.down(home)
