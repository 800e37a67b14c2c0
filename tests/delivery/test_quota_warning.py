"""The warning at 90 % of a mailbox's quota (issue 19.4), delivered by the real send service
(running as the mail owner): once when a delivery takes the mailbox past the threshold, not
again while it stays there, and once more after its owner made room and it fills up again."""

from __future__ import annotations

import os

from send_harness import SendService, inject, maildir_messages, queue_empty, wait_until

from mailyard import quota
from mailyard.delivery.quota_warning import MARKER, WARN_PERCENT
from mailyard.home import Home
from mailyard.services.privileges import mail_owner
from mailyard.store import accounts
from mailyard.store.db import dispose_all

JOE = "joe@example.test"
SUBJECT = f"Subject: Your mailbox is {WARN_PERCENT} % full".encode()


def deliver(home: Home, size: int, subject: str) -> None:
    body = (f"From: a@remote.test\r\nTo: {JOE}\r\nSubject: {subject}\r\n\r\n").encode() + \
        b"x" * size + b"\r\n"
    inject(home, [JOE], body=body)
    wait_until(lambda: queue_empty(home), what=f"{subject} to be delivered")
    assert any(f"Subject: {subject}\n".encode() in m for m in maildir_messages(home, JOE))


def warnings(home: Home) -> list[bytes]:
    return [m for m in maildir_messages(home, JOE) if SUBJECT in m]


def test_one_warning_per_crossing_of_the_threshold(mail_home: Home,
                                                   send_service: SendService) -> None:
    accounts.set_mailbox(mail_home, JOE, quota_mb=1)
    dispose_all()
    send_service.start()
    maildir = mail_home.maildir(JOE)

    deliver(mail_home, 500_000, "half")  # 48 %: no warning
    assert warnings(mail_home) == [] and not (maildir / MARKER).exists()
    deliver(mail_home, 450_000, "most")  # 91 %: the warning
    [warning] = warnings(mail_home)
    head = warning.split(b"\n\n", 1)[0]
    assert b"From: Mail system <postmaster@example.test>" in head
    assert b"Auto-Submitted: auto-generated" in head and f"To: <{JOE}>".encode() in head
    assert b"of its 1 MB quota" in warning
    marker = os.stat(maildir / MARKER)
    assert (marker.st_uid, marker.st_gid) == mail_owner()  # written as the mail owner
    used = quota.usage(maildir)
    assert used is not None and used > 950_000 + len(warning) - 1000  # the warning counts too
    deliver(mail_home, 10_000, "more")  # still past: no second warning
    assert len(warnings(mail_home)) == 1

    # the owner makes room: the two big messages go, as Dovecot records an expunge
    removed = 0
    for path in (maildir / "new").iterdir():
        data = path.read_bytes()
        if b"Subject: half\n" in data or b"Subject: most\n" in data:
            removed += len(data)
            path.unlink()
    with open(maildir / quota.MAILDIRSIZE, "a") as f:
        f.write(f"-{removed} -2\n")
    deliver(mail_home, 1_000, "small")  # back under: re-armed
    assert not (maildir / MARKER).exists() and len(warnings(mail_home)) == 1
    deliver(mail_home, 950_000, "again")  # past again: a second warning
    assert len(warnings(mail_home)) == 2 and (maildir / MARKER).exists()


def test_no_warning_without_a_quota(mail_home: Home, send_service: SendService) -> None:
    send_service.start()
    deliver(mail_home, 900_000, "big")
    assert warnings(mail_home) == []
    assert not (mail_home.maildir(JOE) / MARKER).exists()
