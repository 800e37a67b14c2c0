"""Several worker processes on one port: one cap, one log, and the stop and SIGKILL guarantees."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
from pathlib import Path

from smtp_helpers import JOE, RawClient, change, wait_until

from mailyard.home import Home
from mailyard.logs import parse_tai64n

MESSAGE = b"From: a@remote.test\r\nTo: joe@example.org\r\nSubject: load\r\n\r\nHi Joe.\r\n"


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_share_one_port_one_cap_and_one_log_in_time_order(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.workers": 2, "smtp.max_connections": 3})
    svc = start("smtp")
    wait_until(lambda: svc.log().count("worker-start service=smtp") == 2, what="two workers")
    assert len(children(svc.proc.pid)) == 2
    svc.wait_log("workers=2")
    held = [RawClient(node.port("smtp")) for _ in range(3)]
    assert [c.code() for c in held] == [220, 220, 220]
    over = RawClient(node.port("smtp"))  # whichever worker takes it, the cap is the service's
    assert over.reply().startswith(b"421 4.7.0")
    for client in held:
        client.send(b"QUIT\r\n")
        assert client.code() == 221
        client.close()
    wait_until(lambda: svc.log().count("end ip=") >= 4, what="the sessions to end")
    for _ in range(6):
        with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=30) as s:
            s.sendmail("a@remote.test", [JOE], MESSAGE)
    wait_until(lambda: svc.log().count("accepted qid=") == 6, what="six messages")
    stamps = [parse_tai64n(line.split(" ", 1)[0]) for line in svc.log().splitlines()]
    assert stamps == sorted(stamps)  # one writer: the log tools may bisect on it


def test_a_killed_worker_is_replaced_and_what_it_held_stops_counting(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.workers": 2, "smtp.max_connections": 2})
    svc = start("smtp")
    wait_until(lambda: svc.log().count("worker-start service=smtp") == 2, what="two workers")
    held = [RawClient(node.port("smtp")) for _ in range(2)]
    assert [c.code() for c in held] == [220, 220]
    before = children(svc.proc.pid)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    svc.wait_log("worker-died service=smtp worker=0 ")
    svc.wait_log("worker-died service=smtp worker=1 ")
    wait_until(lambda: len(children(svc.proc.pid) - before) == 2, what="two new workers")
    fresh = [RawClient(node.port("smtp")) for _ in range(2)]
    assert [c.code() for c in fresh] == [220, 220]  # the dead workers' sessions are not counted
    for client in held + fresh:
        client.close()


def test_sigkill_of_the_parent_under_load_leaves_no_worker_and_loses_nothing(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.workers": 2})
    svc = start("smtp")
    wait_until(lambda: svc.log().count("worker-start service=smtp") == 2, what="two workers")
    workers = children(svc.proc.pid)
    answered: list[str] = []
    failed_early: list[BaseException] = []
    killed = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=30) as s:
                s.ehlo()
                for _ in range(200):
                    s.mail("a@remote.test")
                    s.rcpt(JOE)
                    code, text = s.data(MESSAGE)
                    if code == 250:
                        with lock:
                            answered.append(text.decode().rsplit(" ", 1)[1])
        except (smtplib.SMTPException, OSError) as exc:
            if not killed.is_set():  # before the kill every message must go through
                failed_early.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) >= 10, what="some messages accepted")
    killed.set()
    os.kill(svc.proc.pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=60)
    wait_until(lambda: not any(alive(pid) for pid in workers), what="the workers to die")
    assert not failed_early
    queue = node.queue_dir
    for qid in answered:
        assert (queue / "todo" / qid).is_file() and (queue / "mess" / qid).is_file(), qid


def test_one_client_gets_half_the_slots_across_workers(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.workers": 2, "smtp.max_connections": 4,
                  "smtp.relay_networks": ["10.0.0.0/8"]})  # loopback is not exempt here
    svc = start("smtp")
    wait_until(lambda: svc.log().count("worker-start service=smtp") == 2, what="two workers")
    held = [RawClient(node.port("smtp")) for _ in range(2)]
    assert [c.code() for c in held] == [220, 220]
    third = RawClient(node.port("smtp"))
    assert third.reply().startswith(b"421 4.7.0 mx.example.test too many connections from your")
    svc.wait_log("rule=TOO_MANY_FROM_CLIENT value=3/2")  # the parent writes it a moment later
    for client in held:
        client.close()
