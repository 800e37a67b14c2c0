"""Filters inside the running node: the smtp service refusing viruses and spam at DATA, and
the send service delivering through spamd, also while spamd is killed under load."""

from __future__ import annotations

import base64
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from tests.filters.helpers import EICAR, GTUBE, READY_TIMEOUT, Clamd, Spamd, message
from tests.waiting import wait_for

from mailyard.home import Home
from mailyard.mailboxes import folder_dir
from mailyard.queue import Queue
from mailyard.services.privileges import mail_owner, running_as_root
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting

RCPT = "joe@example.com"
SIGNATURE = "Mailyard.Eicar-Test-File.Local.UNOFFICIAL"


def open_to_mail_owner(home: Home) -> None:
    """The smtp and send services drop root for the mail owner, who must then read and write
    the store (SQLite writes next to its file), the queue and the mailboxes."""
    if not running_as_root():
        return
    uid, gid = mail_owner()
    os.chown(home.root, 0, gid)
    # group-writable for SQLite's -wal/-shm files; others may pass through: clamd runs as
    # clamav and needs its directories under the home
    os.chmod(home.root, 0o2775)
    for path in home.root.glob("store.sqlite*"):
        os.chown(path, uid, gid)
        os.chmod(path, 0o660)
    for top in (home.queue_dir, home.mail_dir, home.log_dir, home.run_dir, home.etc_dir,
                home.var_dir):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "clamav"]  # clamd's own, as clamav
            os.chown(dirpath, uid, gid)
            for name in filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)


class NodeService:
    """One of the node's Python services (smtp, send) as a real process of its own."""

    def __init__(self, home: Home, module: str, function: str, ready: str) -> None:
        self.home, self.module, self.function, self.ready = home, module, function, ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = home.root / f"{function}.stderr"

    def start(self) -> None:
        code = (f"from mailyard.home import Home; from {self.module} import {self.function}; "
                f"{self.function}(Home.find({str(self.home.root)!r}))")
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out,
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.is_ready():
            assert self.proc.poll() is None, self.output.read_text(errors="replace")
            assert time.monotonic() < deadline, f"{self.function} did not start"
            time.sleep(0.1)

    def is_ready(self) -> bool:
        log = self.home.log_dir / self.ready.split(":", 1)[0] / "current"
        return log.exists() and self.ready.split(":", 1)[1] in log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def node(module_home: Home) -> Home:
    accounts.add_domain(module_home, "example.com")
    accounts.add_mailbox(module_home, RCPT, "password-of-joe-1")
    for key, value in (("virus.smtp_scanning", True), ("spam.smtp_scanning", True),
                       ("spam.smtp_threshold", 10.0), ("spam.mailbox_scanning", True)):
        set_setting(module_home, key, value)
    dispose_all()
    return module_home


@pytest.fixture(scope="module")
def running(node: Home) -> Iterator[dict[str, object]]:
    """spamd, clamd, smtp and send of one node, all real processes."""
    spamd_daemon, clamd_daemon = Spamd(node), Clamd(node)
    spamd_daemon.start()
    clamd_daemon.start()
    open_to_mail_owner(node)
    smtp = NodeService(node, "mailyard.smtp.service", "run_smtp", "smtp:pid=")
    send = NodeService(node, "mailyard.delivery.service", "run", "send:status:")
    try:
        smtp.start()
        send.start()
        yield {"spamd": spamd_daemon, "clamd": clamd_daemon, "smtp": smtp, "send": send}
    finally:
        for service in (smtp, send):
            service.stop()
        clamd_daemon.stop()
        spamd_daemon.stop()


def smtp_log(home: Home) -> str:
    """The smtp service's log and its stderr (where the filters' log records go)."""
    log = (home.service_log_dir("smtp") / "current").read_text(errors="replace")[-3000:]
    stderr = (home.root / "run_smtp.stderr").read_text(errors="replace")[-3000:]
    return f"{log}\nstderr:\n{stderr}"


def send_mail(home: Home, data: bytes, sender: str = "alice@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", home.port("smtp"), timeout=120) as client:
        client.sendmail(sender, [RCPT], data)


def delivered(home: Home) -> dict[str, list[bytes]]:
    maildir = home.maildir(RCPT)
    out: dict[str, list[bytes]] = {}
    for folder in ("INBOX", "Spam"):
        found = []
        for sub in ("new", "cur"):
            directory = folder_dir(maildir, folder) / sub
            if directory.is_dir():
                found += [p.read_bytes() for p in sorted(directory.iterdir())]
        out[folder] = found
    return out


def with_id(messages: list[bytes], msgid: str) -> list[bytes]:
    return [m for m in messages if f"Message-ID: {msgid}".encode() in m
            or f"Message-Id: {msgid}".encode() in m]


def test_smtp_refuses_gtube_with_a_5xx_and_delivers_nothing(running, node):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send_mail(node, message(GTUBE, msgid="<gtube-e2e@example.org>"))
    assert refused.value.smtp_code == 550, smtp_log(node)
    assert b"judged to be spam" in refused.value.smtp_error


def test_smtp_refuses_eicar_in_base64_mime_naming_the_signature(running, node):
    data = (b"From: alice@example.org\r\nTo: joe@example.com\r\nSubject: file\r\n"
            b"Message-ID: <eicar-e2e@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
            b"Content-Type: text/plain\r\n\r\nsee attached\r\n--B\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=e.com\r\n\r\n"
            + base64.encodebytes(EICAR).replace(b"\n", b"\r\n") + b"--B--\r\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send_mail(node, data)
    assert refused.value.smtp_code == 554
    assert SIGNATURE.encode() in refused.value.smtp_error


def test_a_clean_message_is_accepted_scanned_at_the_mailbox_and_delivered(running, node):
    send_mail(node, message(msgid="<clean-e2e@example.org>"))
    got = wait_for(lambda: with_id(delivered(node)["INBOX"], "<clean-e2e@example.org>"),
                   "the clean message in INBOX", READY_TIMEOUT)
    assert b"X-Spam-Status: No, score=" in got[0]


def test_spam_under_the_smtp_threshold_is_delivered_into_the_spam_folder(running, node):
    """A custom rule worth 7 points: over the mailbox threshold (5), under the SMTP one (10)."""
    from mailyard.filters import prefs

    prefs.add_preference(node, "global", "body", "LOCAL_E2E_MARK /e2e-marker-9911/",
                         render=False)
    prefs.add_preference(node, "global", "score", "LOCAL_E2E_MARK 7")
    running["spamd"].reload()
    # a sender new to joe: the auto-whitelist has no history to pull the score toward
    send_mail(node, message("offer e2e-marker-9911", subject="deal", sender="bulk@offers.example",
                            msgid="<mid-e2e@example.org>"), sender="bulk@offers.example")
    wait_for(lambda: with_id(delivered(node)["Spam"] + delivered(node)["INBOX"],
                             "<mid-e2e@example.org>"), "the message's delivery", READY_TIMEOUT)
    got = with_id(delivered(node)["Spam"], "<mid-e2e@example.org>")
    assert got, with_id(delivered(node)["INBOX"], "<mid-e2e@example.org>")
    assert b"Subject: --SPAM-- deal" in got[0]


def test_clamd_stopped_means_4xx_and_the_message_stays_with_the_sender(running, node):
    queue = Queue(node.queue_dir)
    queue_before = set(queue.ids("mess") + queue.ids("todo"))
    running["clamd"].stop()
    try:
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            send_mail(node, message(msgid="<deferred-e2e@example.org>"))
        assert deferred.value.smtp_code == 451
        assert b"try again later" in deferred.value.smtp_error
        assert set(queue.ids("mess") + queue.ids("todo")) <= queue_before  # nothing new
    finally:
        running["clamd"].start()


def test_spamd_killed_mid_load_loses_no_mail(running, node):
    """Thirty messages through SMTP; spamd is killed (SIGKILL, children and all) once ten are
    delivered, while the next ones are in the queue or being scanned, and the last fifteen
    are sent after it died: every one of them reaches the mailbox, exactly once."""
    total, kill_after, hold_back = 30, 10, 15
    ids = [f"<load-{i}@example.org>" for i in range(total)]
    errors: list[BaseException] = []
    killed = threading.Event()

    def load() -> None:
        try:
            for i, msgid in enumerate(ids):
                if i == total - hold_back:
                    killed.wait(timeout=600)
                send_mail(node, message(f"load message {i}", msgid=msgid))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    def count_delivered() -> int:
        everything = delivered(node)["INBOX"] + delivered(node)["Spam"]
        return sum(1 for msgid in ids if with_id(everything, msgid))

    # SMTP-level spam scanning is on too: after the kill it lets mail through unscanned
    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for(lambda: count_delivered() >= kill_after or errors, "the first deliveries", READY_TIMEOUT)
        spamd_daemon = running["spamd"]
        os.killpg(spamd_daemon.proc.pid, signal.SIGKILL)
        spamd_daemon.proc.wait(timeout=60)
    finally:
        killed.set()
        sender.join(timeout=600)
    assert not errors, errors
    wait_for(lambda: count_delivered() == total, "all messages delivered", timeout=600)
    everything = delivered(node)["INBOX"] + delivered(node)["Spam"]
    for msgid in ids:
        assert len(with_id(everything, msgid)) == 1, msgid  # each exactly once
    scanned = [m for m in everything if b"X-Spam-Status:" in m and b"load message" in m]
    assert kill_after <= len(scanned) <= total - hold_back  # before the kill scanned, after not
    queue = Queue(node.queue_dir)
    wait_for(lambda: not any(queue.ids(state) for state in ("todo", "mess", "local")),
             "an empty queue", READY_TIMEOUT)
