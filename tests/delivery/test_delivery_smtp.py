"""Through the front door: mail sent with smtplib to the smtp service reaches the Maildir via
the queue and send; a full disk under the queue gives a 4xx and leaves nothing behind."""

from __future__ import annotations

import os
import smtplib
import subprocess
from email.message import EmailMessage

import pytest
from send_harness import (
    SendService,
    SmtpService,
    maildir_messages,
    queue_empty,
    read_send_log,
    wait_until,
)

from mailyard.home import Home
from mailyard.queue import Queue
from mailyard.services.privileges import mail_owner


def _message(to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@remote.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_smtplib_to_a_local_mailbox_lands_in_its_maildir(mail_home: Home,
                                                          send_service: SendService,
                                                          smtp_service: SmtpService) -> None:
    send_service.start()
    smtp_service.start()
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=30) as client:
        client.send_message(_message("joe@example.test", "via smtp", "Hello Joe.\n.dot\n"))
    got = wait_until(lambda: maildir_messages(mail_home, "joe@example.test"), what="delivery")[0]
    assert got.startswith(b"Return-Path: <alice@remote.test>\nDelivered-To: joe@example.test\n")
    assert b"Received: " in got and b"Subject: via smtp\n" in got
    assert got.endswith(b"\n\nHello Joe.\n.dot\n")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    assert any(line.startswith("info msg ") and " from <alice@remote.test> " in line
               for line in read_send_log(mail_home))


def test_full_disk_under_the_queue_gives_4xx_and_nothing_half_written(
        mail_home: Home, smtp_service: SmtpService) -> None:
    queue = mail_home.queue_dir
    for name in os.listdir(queue):
        path = queue / name
        if path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        else:
            path.unlink()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(queue)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"this test mounts a tmpfs and needs root: {done.stderr}"
    try:
        os.chown(queue, *mail_owner())
        Queue(queue)
        smtp_service.start()
        with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=60) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.send_message(_message("joe@example.test", "too big", "x" * 3_000_000))
            assert 400 <= caught.value.smtp_code < 500
            client.send_message(_message("joe@example.test", "small", "fits\n"))
        q = Queue(queue)
        leftovers = sorted(str(p.relative_to(queue)) for p in queue.rglob("*")
                           if p.is_file() and p.name != "sendmutex")
        assert len(leftovers) == 2 and all(p.split("/")[0] in ("mess", "todo")
                                           for p in leftovers)
        assert q.counts()["todo"] == 1
    finally:
        smtp_service.kill()
        subprocess.run(["umount", "-l", str(queue)], check=False)
