"""Recovery on start: every state a crash can leave in the queue is finished correctly."""

from __future__ import annotations

import os
import time

from send_harness import (
    SendService,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    wait_until,
)

from mailyard.home import Home
from mailyard.queue import Queue
from mailyard.queue import state as qstate
from mailyard.queue.state import BounceReport
from mailyard.services.privileges import chown_tree
from mailyard.store import accounts


def _local(rcpt: str) -> bool:
    return rcpt.endswith("@example.test")


def _split(q: Queue, qid: str) -> qstate.StoredMessage:
    return qstate.split_todo(q, [(qid, qstate.read_todo(q, qid))], _local)[0]


def test_each_crash_state_is_recovered_on_start(mail_home: Home,
                                                send_service: SendService) -> None:
    accounts.add_mailbox(mail_home, "ann@example.test", "secret-ann-1")
    q = Queue(mail_home.queue_dir)

    # 1. split half-way: info and local written, todo still there -> split again, deliver once
    half = inject(mail_home, ["ann@example.test"], subject="half split")
    env = qstate.read_todo(q, half)
    (q.root / "info" / half).write_bytes(env.to_bytes())
    (q.root / "local" / half).write_bytes(b"Tann@example.test\n")

    # 2. one recipient done, one not -> only the other gets it
    part = inject(mail_home, ["joe@example.test", "ann@example.test"], subject="partly done")
    stored = _split(q, part)
    joe = next(r for r in stored.recipients["local"] if r.address == "joe@example.test")
    qstate.mark_done(q, "local", part, joe.offset)

    # 3. everything done, the removal did not happen -> just removed
    done = inject(mail_home, ["joe@example.test"], subject="all done")
    stored = _split(q, done)
    qstate.mark_done(q, "local", done, stored.recipients["local"][0].offset)

    # 4. everything done, a failure waiting to be bounced -> the bounce goes out
    failed = inject(mail_home, ["nobody@example.test"], sender="joe@example.test",
                    subject="bounce pending")
    stored = _split(q, failed)
    qstate.add_bounce_report(q, failed, BounceReport(
        "nobody@example.test", "Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"))
    qstate.mark_done(q, "local", failed, stored.recipients["local"][0].offset)

    # 5. an inject that died between its renames: old orphans go, a young one stays
    old = time.time() - qstate.MESS_ORPHAN_SECONDS - 60
    (q.root / "mess" / "999999001").write_bytes(b"orphan")
    os.utime(q.root / "mess" / "999999001", (old, old))
    (q.root / "mess" / "999999002").write_bytes(b"young orphan")
    very_old = time.time() - qstate.TMP_ORPHAN_SECONDS - 60
    (q.root / "tmp" / "1.2.3").write_bytes(b"dead writer")
    os.utime(q.root / "tmp" / "1.2.3", (very_old, very_old))
    (q.root / "tmp" / "4.5.6").write_bytes(b"live writer")

    # 6. a committed envelope whose data is gone (the disk lost a rename) -> dropped, logged;
    # here one written before envelopes recorded the data's CRC-32
    env.crc32 = None
    (q.root / "todo" / "999999003").write_bytes(env.to_bytes())

    # 7. the SMTP services rename before their one sync round (docs/queue.md, "Group
    # commit"), so a crash can leave names whose contents never reached the disk: an
    # envelope that does not parse, and data that does not match the envelope's size and
    # CRC-32 (here: as long, other octets). Neither was answered: removed, never delivered.
    (q.root / "todo" / "999999004").write_bytes(b"\0" * 40)
    (q.root / "mess" / "999999004").write_bytes(b"\0" * 40)
    torn = inject(mail_home, ["ann@example.test"], subject="torn data")
    data = (q.root / "mess" / torn).read_bytes()
    assert qstate.read_todo(q, torn).crc32 is not None
    (q.root / "mess" / torn).write_bytes(data.replace(b"torn data", b"TORN DATA"))

    chown_tree(q.root)  # as the send service would have left them
    send_service.start()
    ann_subjects = lambda: sorted(  # noqa: E731
        line for m in maildir_messages(mail_home, "ann@example.test")
        for line in m.split(b"\n") if line.startswith(b"Subject:"))
    wait_until(lambda: len(ann_subjects()) >= 2, what="ann's deliveries")
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="the pending bounce")[0]
    assert b"Final-Recipient: rfc822; nobody@example.test" in bounce
    wait_until(lambda: queue_empty(mail_home, ("todo", "info", "local", "remote", "bounce")),
               what="the queue to empty")
    assert ann_subjects() == [b"Subject: half split", b"Subject: partly done"]
    joe_plain = [m for m in maildir_messages(mail_home, "joe@example.test")
                 if b"multipart/report" not in m]
    assert joe_plain == []  # neither "partly done" nor "all done" came again
    log = read_send_log(mail_home)
    for qid in (half, part, done, failed):
        assert f"end msg {qid}" in log
    assert sorted(os.listdir(q.root / "mess")) == ["999999002"]
    assert sorted(os.listdir(q.root / "tmp")) == ["4.5.6"]
    assert "warning: todo/999999003 has no message file; removed" in log
    assert any(line.startswith("warning: envelope todo/999999004 is torn: ")
               and line.endswith("; removed") for line in log), log
    assert any(line.startswith(f"warning: mess/{torn} is {len(data)} octets with CRC-32 ")
               for line in log), log
    assert not any(f"msg {torn} " in line for line in log if "delivery" in line)
    assert "warning: removed leftover mess/999999001" in log


def test_sighup_reloads_settings(mail_home: Home, send_service: SendService) -> None:
    import signal

    from mailyard.store.settings_store import set_setting

    send_service.start()
    accounts.add_domain(mail_home, "late.test")
    accounts.add_mailbox(mail_home, "kim@late.test", "secret-kim-1")
    set_setting(mail_home, "send.local_concurrency", 3)
    send_service.signal(signal.SIGHUP)
    wait_until(lambda: "status: local 0/3 remote 0/20" in read_send_log(mail_home),
               what="the new concurrency in a status line")
    inject(mail_home, ["kim@late.test"])  # the domain list is read for every new message
    wait_until(lambda: maildir_messages(mail_home, "kim@late.test"), what="delivery")


def test_full_disk_while_splitting_is_retried_without_loss(mail_home: Home,
                                                           send_service: SendService) -> None:
    import subprocess

    from mailyard.services.privileges import mail_owner

    queue = mail_home.queue_dir
    subprocess.run(["rm", "-rf", str(queue)], check=True)
    queue.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(queue)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"this test mounts a tmpfs and needs root: {done.stderr}"
    try:
        os.chown(queue, *mail_owner())
        Queue(queue)
        qid = inject(mail_home, ["joe@example.test"], subject="waits for space")
        filler = queue / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        send_service.start()
        wait_until(lambda: any(line.startswith("alert: unable to split todo messages")
                               for line in read_send_log(mail_home)), what="the alert")
        assert maildir_messages(mail_home, "joe@example.test") == []
        assert (queue / "todo" / qid).exists()
        filler.unlink()
        wait_until(lambda: maildir_messages(mail_home, "joe@example.test"), what="delivery")
        wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    finally:
        send_service.kill()
        subprocess.run(["umount", "-l", str(queue)], check=False)
