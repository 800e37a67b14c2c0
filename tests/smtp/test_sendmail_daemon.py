"""sendmail for every local user: `nobody` runs the real sendmail program, which hands the
message to the running sendmail service over its unix socket."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_helpers import (
    JOE,
    PYTHON,
    REPO,
    START_TIMEOUT,
    Service,
    change,
    give_store_to_mail_owner,
    leftovers,
    queue_entries,
    wait_until,
)
from tests.delivery.send_harness import SendService

from mailyard.home import Home
from mailyard.services import control
from mailyard.settings.registry import SERVICE_NAMES
from mailyard.smtp.sendmail_daemon import MAX_CALLERS, SOCKET_MODE, socket_path
from mailyard.store.accounts import add_domain, set_domain_owner
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_many

SENDMAIL = str(Path(sys.executable).parent / "sendmail")
NOBODY = pwd.getpwnam("nobody").pw_uid
REMOTE = "friend@elsewhere.test"


def start_daemon(home: Home) -> Service:
    code = (f"from mailyard.home import Home; from mailyard.smtp.sendmail_daemon import run; "
            f"run(Home.find({str(home.root)!r}))")
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    service = Service("sendmail", home, proc)
    try:
        service.wait_log(f"service=sendmail pid={proc.pid} ", timeout=START_TIMEOUT)
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture
def daemon(node: Home) -> Iterator[Service]:
    service = start_daemon(node)
    yield service
    service.stop()


def as_nobody(home: Home, args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    """The sendmail program itself, run by `nobody` as a web site's PHP would run it."""
    return subprocess.run(["runuser", "-u", "nobody", "--", "env",
                           f"MAILYARD_HOME={home.root}", SENDMAIL, *args],
                          input=data, capture_output=True, timeout=120)


def test_nobody_sends_through_the_socket_and_the_mail_is_delivered(node: Home,
                                                                   daemon: Service) -> None:
    sock = socket_path(node)
    assert sock.stat().st_mode & 0o777 == SOCKET_MODE
    assert f"uid={pwd.getpwnam('mailyard').pw_uid}" in daemon.log()  # never root
    out = as_nobody(node, ["-t", "-i"], b"To: joe@example.org\nSubject: from php\n\nhello\n")
    assert out.returncode == 0, out.stderr
    [(envelope, data)] = queue_entries(node)
    assert envelope["uid"] == NOBODY and envelope["sender"] == "nobody@mx.example.test"
    assert envelope["recipients"] == [JOE]
    assert data.startswith(f"Received: (mailyard-sendmail invoked by uid {NOBODY}); ".encode())
    [qid] = [p.name for p in (node.queue_dir / "todo").iterdir()]
    assert f"queued qid={qid} uid={NOBODY} pid=" in daemon.log()

    send = SendService(node)
    send.start()
    try:
        new = node.maildir(JOE) / "new"
        wait_until(lambda: new.is_dir() and any(new.iterdir()), timeout=60,
                   what="the message in joe's Maildir")
        [delivered] = list(new.iterdir())
        assert b"Subject: from php" in delivered.read_bytes()
        assert any(line.endswith(f" uid {NOBODY}") and line.startswith("info msg ")
                   for line in send.log_lines())
    finally:
        send.stop()


def test_a_nobody_caller_over_its_limit_gets_75_and_the_count_survives_a_restart(
        node: Home, daemon: Service) -> None:
    change(node, {"limits.messages_per_hour": 2})
    for _ in range(2):
        out = as_nobody(node, [REMOTE], b"Subject: out\n\nx\n")
        assert out.returncode == 0, out.stderr
    out = as_nobody(node, [REMOTE], b"Subject: out\n\nx\n")
    assert out.returncode == 75
    assert out.stderr.decode().strip() == (
        f"sendmail: uid:{NOBODY} is over its limit of 2 messages per hour (2 in the last "
        "hour); try again later; nothing was sent")
    # local mail is not outbound: not counted, not refused
    assert as_nobody(node, [JOE], b"Subject: in\n\nx\n").returncode == 0
    assert len(queue_entries(node)) == 3
    log = daemon.wait_log(f"rate-limit rule=messages key=uid:{NOBODY} limit=2 count=2")
    assert "status=75" in log

    daemon.stop()
    restarted = start_daemon(node)
    try:
        again = as_nobody(node, [REMOTE], b"Subject: out\n\nx\n")
        assert again.returncode == 75 and b"over its limit of 2" in again.stderr
    finally:
        restarted.stop()
    assert len(queue_entries(node)) == 3


def test_a_callers_own_domain_counts_as_xuser_reads_the_owner(node: Home,
                                                              daemon: Service) -> None:
    """Mail of a user sent as an address of a domain that user owns counts for the domain
    too; as another user's domain it does not."""
    change(node, {"limits.domain_messages_per_hour": 1})
    set_domain_owner(node, "example.org", "nobody")
    add_domain(node, "other.test", owner="www-data")
    dispose_all()
    give_store_to_mail_owner(node)
    assert as_nobody(node, ["-f", "site@example.org", REMOTE], b"Subject: 1\n\nx\n") \
        .returncode == 0
    out = as_nobody(node, ["-f", "shop@example.org", REMOTE], b"Subject: 2\n\nx\n")
    assert out.returncode == 75
    assert b"domain:example.org is over its limit of 1 messages per hour" in out.stderr
    for n in range(2):  # not nobody's domain: only the uid's own count applies
        assert as_nobody(node, ["-f", f"s{n}@other.test", REMOTE], b"Subject: 3\n\nx\n") \
            .returncode == 0
    assert len(queue_entries(node)) == 3


def test_the_daemons_checks_apply_to_nobody(node: Home, daemon: Service) -> None:
    change(node, {"smtp.message_size_mb": 1, "smtp.outbound_blacklist": ["@blocked.test"]})
    big = b"Subject: big\n\n" + (b"x" * 999 + b"\n") * 2048  # 2 MB
    out = as_nobody(node, [REMOTE], big)
    assert out.returncode == 65 and b"larger than the limit of 1048576 octets" in out.stderr
    out = as_nobody(node, ["someone@blocked.test"], b"Subject: x\n\ny\n")
    assert out.returncode == 77 and b"outbound blacklist entry @blocked.test" in out.stderr
    out = as_nobody(node, ["-bp"], b"")
    assert out.returncode == 64
    out = as_nobody(node, ["fred"], b"Subject: bare\n\nz\n")  # the default domain is the node's
    assert out.returncode == 0, out.stderr
    [(envelope, _)] = queue_entries(node)
    assert envelope["recipients"] == ["fred@mx.example.test"]
    assert [p for p in leftovers(node) if p.startswith("tmp/")] == []


def test_without_the_service_nobody_is_told_to_try_again(node: Home) -> None:
    out = as_nobody(node, [JOE], b"Subject: x\n\ny\n")
    assert out.returncode == 75
    assert b"sendmail service does not answer" in out.stderr and b"nothing was sent" in out.stderr
    assert queue_entries(node) == []


def test_a_silent_caller_holds_no_slot_for_ever(node: Home, daemon: Service) -> None:
    """A caller that connects and sends nothing does not stop the others (each has its own
    thread, at most MAX_CALLERS of them)."""
    idle = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(socket_path(node)))
        idle.append(s)
    try:
        out = as_nobody(node, [JOE], b"Subject: x\n\ny\n")
        assert out.returncode == 0, out.stderr
    finally:
        for s in idle:
            s.close()
    assert MAX_CALLERS == 64
    os.kill(daemon.proc.pid, signal.SIGTERM)
    daemon.proc.wait(timeout=30)
    wait_until(lambda: "stopped service=sendmail" in daemon.log(), what="the stop line")


def test_the_node_supervises_the_sendmail_service(node: Home) -> None:
    """`mailyard up` starts it as the other services (as the mail owner, its socket ready),
    `mailyard status` shows it, and nobody's mail goes through it."""
    set_many(node, {f"service.{n}.start_on_boot": n == "sendmail" for n in SERVICE_NAMES})
    dispose_all()
    give_store_to_mail_owner(node)
    try:
        control.up(node, timeout=90)
        [status] = [s for s in control.status(node) if s.name == "sendmail"]
        assert status.state == "RUNNING" and status.version.startswith("mailyard-sendmail ")
        assert pwd.getpwuid(os.stat(f"/proc/{status.pid}").st_uid).pw_name == "mailyard"
        out = as_nobody(node, [JOE], b"Subject: supervised\n\nx\n")
        assert out.returncode == 0, out.stderr
        [(envelope, _)] = queue_entries(node)
        assert envelope["uid"] == NOBODY
    finally:
        control.down(node)
