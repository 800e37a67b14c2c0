"""A full queue file system while a failure is recorded: the bounce must not be lost
(issue 16 item 11). The queue lives on a small tmpfs the test mounts and fills."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest
from send_harness import (
    SendService,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    start_sink,
    wait_until,
)

from mailyard.home import Home
from mailyard.queue import Queue
from mailyard.store.settings_store import set_setting

# Big enough for the queue's directories and one small message; filled up in the test.
TMPFS_SIZE = "2m"


@pytest.fixture
def small_queue_fs(mail_home: Home) -> Iterator[Home]:
    """Mount a small tmpfs over the home's queue directory and lay the queue out on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    queue_dir = mail_home.queue_dir
    st = queue_dir.stat()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0750", "tmpfs",
                    str(queue_dir)], check=True)
    try:
        os.chown(queue_dir, st.st_uid, st.st_gid)
        Queue(queue_dir)
        yield mail_home
    finally:
        subprocess.run(["umount", "-l", str(queue_dir)], check=False)


def _fill(path: str) -> None:
    """Write zeros until the file system is full (tmpfs has no reserve for root)."""
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                if os.write(fd, block) < len(block):
                    block = block[:4096] if len(block) > 4096 else b"\0"
            except OSError:
                if len(block) == 1:
                    return
                block = block[:4096] if len(block) > 4096 else b"\0"
    finally:
        os.close(fd)


def test_bounce_survives_a_full_disk_while_its_report_is_written(
        small_queue_fs: Home, send_service: SendService) -> None:
    home = small_queue_fs
    fail_gate, ok_gate = threading.Event(), threading.Event()
    failing, stop_failing = start_sink(hold=fail_gate)
    failing.replies["gone@fail.test"] = "550 5.1.1 gone: no such user"
    accepting, stop_accepting = start_sink(hold=ok_gate)
    filler = str(home.queue_dir / "filler")
    try:
        set_setting(home, "send.smtp_routes", [f"fail.test:{failing.host}:{failing.port}",
                                               f"ok.test:{accepting.host}:{accepting.port}"])
        send_service.start()
        qid = inject(home, ["gone@fail.test", "bob@ok.test"], sender="joe@example.test")
        wait_until(lambda: sum(f"msg {qid} to remote" in line
                               for line in read_send_log(home)) == 2,
                   what="both deliveries to start")
        _fill(filler)
        fail_gate.set()
        wait_until(lambda: any(": failure: " in line for line in read_send_log(home)),
                   what="the permanent failure")
        wait_until(lambda: any(line.startswith("alert:") for line in read_send_log(home)),
                   what="the report write to fail on the full disk")
        ok_gate.set()
        wait_until(lambda: accepting.messages, what="the other recipient's delivery")
        wait_until(lambda: any(": success: " in line for line in read_send_log(home)),
                   what="the success to be recorded")
        assert Queue(home.queue_dir).path("mess", qid).exists(), \
            "the message was removed while its bounce was not recorded"
        os.unlink(filler)
        send_service.signal(signal.SIGALRM)  # retry now rather than in a minute
        bounce = wait_until(lambda: [m for m in maildir_messages(home, "joe@example.test")
                                     if b"multipart/report" in m], what="the bounce")[0]
        assert b"Final-Recipient: rfc822; gone@fail.test" in bounce
        assert b"Diagnostic-Code: smtp; 550 5.1.1 gone: no such user" in bounce
        wait_until(lambda: queue_empty(home), what="the queue to empty")
        assert [m.recipients for m in accepting.messages] == [["bob@ok.test"]]
    finally:
        fail_gate.set()
        ok_gate.set()
        if os.path.exists(filler):
            os.unlink(filler)
        stop_failing()
        stop_accepting()


def test_a_report_torn_by_a_full_disk_is_cut_off_and_reported(small_queue_fs: Home) -> None:
    from mailyard.queue import state as qstate

    queue = Queue(small_queue_fs.queue_dir)
    qid = "1"
    qstate.add_bounce_report(queue, qid, qstate.BounceReport("a@far.test", "first failure"))
    kept = queue.path("bounce", qid).read_bytes()
    spacer = small_queue_fs.queue_dir / "spacer"
    spacer.write_bytes(b"\0" * 16384)
    filler = str(small_queue_fs.queue_dir / "filler")
    _fill(filler)
    spacer.unlink()  # 16 KiB free: the next report fits only in part
    try:
        with pytest.raises(OSError):
            qstate.add_bounce_report(queue, qid,
                                     qstate.BounceReport("b@far.test", "x" * 200_000))
        assert queue.path("bounce", qid).read_bytes() == kept
        os.unlink(filler)
        qstate.add_bounce_report(queue, qid, qstate.BounceReport("b@far.test", "second"))
        assert [r.recipient for r in qstate.read_bounce_reports(queue, qid)] == \
            ["a@far.test", "b@far.test"]
    finally:
        if os.path.exists(filler):
            os.unlink(filler)
