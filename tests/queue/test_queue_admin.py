"""Queue administration with no send service running: stats, list, show, delete, purge,
process, send-test and reset work directly on the queue (under the service's lock)."""

from __future__ import annotations

import os

import pytest

from mailyard.home import Home
from mailyard.queue import Envelope, Queue, QueueError, admin
from mailyard.queue import state as qstate
from mailyard.queue.control import QueueLock


def _inject(home: Home, rcpts: list[str], sender: str = "a@far.test",
            subject: str = "s") -> str:
    with Queue(home.queue_dir).open_message() as w:
        w.write(f"From: {sender}\nSubject: {subject}\n\nbody\n".encode())
        return w.commit(Envelope(sender=sender, recipients=rcpts, client_ip="192.0.2.1"))


def _split(home: Home, qid: str) -> None:
    q = Queue(home.queue_dir)
    qstate.split_todo(q, [(qid, qstate.read_todo(q, qid))],
                      lambda r: r.endswith("@example.test"))


def _files(home: Home) -> list[str]:
    root = home.queue_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != "sendmutex")


def test_stats_and_list_with_filters(home: Home) -> None:
    waiting = _inject(home, ["x@example.test"], subject="waiting")
    local = _inject(home, ["joe@example.test"], sender="boss@corp.test")
    both = _inject(home, ["joe@example.test", "bob@far.test"])
    remote = _inject(home, ["bob@far.test"])
    for qid in (local, both, remote):
        _split(home, qid)
    assert admin.stats(home) == {"todo": 1, "local": 2, "remote": 2, "messages": 4, "held": 0}
    assert [m.id for m in admin.list_messages(home)] == [waiting, local, both, remote]
    assert [m.id for m in admin.list_messages(home, "local")] == [local, both]
    assert [m.id for m in admin.list_messages(home, "remote")] == [both, remote]
    assert [m.id for m in admin.list_messages(home, "todo")] == [waiting]
    assert [m.id for m in admin.list_messages(home, sender="BOSS@")] == [local]
    assert [m.id for m in admin.list_messages(home, recipient="bob@")] == [both, remote]
    item = admin.list_messages(home, "remote")[0]
    assert item.status == "local+remote" and item.size > 0 and item.age_seconds >= 0
    assert {(r.address, r.channel, r.done) for r in item.recipients} == {
        ("joe@example.test", "local", False), ("bob@far.test", "remote", False)}
    assert item.to_dict()["recipients"][0]["address"]
    with pytest.raises(QueueError, match="unknown queue 'bogus'; choose one of"):
        admin.list_messages(home, "bogus")


def test_show_gives_envelope_text_and_failures(home: Home) -> None:
    qid = _inject(home, ["joe@example.test"], subject="look at me")
    _split(home, qid)
    q = Queue(home.queue_dir)
    qstate.add_bounce_report(q, qid, qstate.BounceReport("joe@example.test", "no such user"))
    detail = admin.show(home, qid)
    assert detail.id == qid and detail.client_ip == "192.0.2.1"
    assert "Subject: look at me" in detail.message and not detail.truncated
    assert detail.failures[0]["recipient"] == "joe@example.test"
    with pytest.raises(QueueError, match=r"no message '12x' in the queue"):
        admin.show(home, "12x")


def test_delete_removes_every_file_of_the_message(home: Home) -> None:
    keep = _inject(home, ["joe@example.test"])
    gone = _inject(home, ["joe@example.test", "bob@far.test"])
    _split(home, gone)
    result = admin.delete(home, gone)
    assert result == {"id": gone, "via": "direct", "done": True}
    assert _files(home) == [f"mess/{keep}", f"todo/{keep}"]
    with pytest.raises(QueueError, match="no message"):
        admin.delete(home, gone)


def test_purge_remote_keeps_the_local_part_of_a_message(home: Home) -> None:
    both = _inject(home, ["joe@example.test", "bob@far.test"])
    remote = _inject(home, ["bob@far.test"])
    waiting = _inject(home, ["x@example.test"])
    _split(home, both)
    _split(home, remote)
    result = admin.purge(home, "remote")
    assert result["messages"] == 2 and result["via"] == "direct"
    assert [m.id for m in admin.list_messages(home)] == [both, waiting]
    assert admin.list_messages(home)[0].status == "local"
    admin.purge(home, "todo")
    assert [m.id for m in admin.list_messages(home)] == [both]
    admin.purge(home, "all")
    assert _files(home) == []
    with pytest.raises(QueueError, match="choose one of local, remote, todo, all"):
        admin.purge(home, "everything")


def test_process_without_the_service_says_so(home: Home) -> None:
    _inject(home, ["joe@example.test"])
    assert admin.process(home) == {"waiting": 1, "service_running": False, "done": False}


def test_send_test_queues_a_message_from_the_postmaster(home: Home) -> None:
    result = admin.send_test(home, "bob@far.test", "Hello  there", "Body text")
    q = Queue(home.queue_dir)
    env = qstate.read_todo(q, result["id"])
    assert env.recipients == ["bob@far.test"] and env.sender == "postmaster@mx.example.test"
    data = (q.root / "mess" / result["id"]).read_bytes()
    assert b"Subject: Hello there\n" in data and data.endswith(b"\n\nBody text\n")
    with pytest.raises(QueueError, match="is not an e-mail address"):
        admin.send_test(home, "bob at far.test")


def test_reset_moves_the_queue_aside_and_makes_a_fresh_one(home: Home) -> None:
    qid = _inject(home, ["joe@example.test"])
    first = admin.reset(home)
    assert first == {"moved_to": str(home.root / "queue.bad"), "messages": 1}
    assert (home.root / "queue.bad" / "todo" / qid).exists()
    assert admin.stats(home)["messages"] == 0
    _inject(home, ["joe@example.test"])
    second = admin.reset(home)
    assert second["moved_to"] == str(home.root / "queue.bad.1")
    assert sorted(os.listdir(home.root / "queue")) == sorted(qstate_dirs())


def test_reset_refuses_while_the_send_service_holds_the_queue(home: Home) -> None:
    with QueueLock(Queue(home.queue_dir)) as lock:  # what a running send service holds
        assert lock.try_acquire()
        with pytest.raises(QueueError, match="stop the send and SMTP services"):
            admin.reset(home)
    assert (home.root / "queue").is_dir() and not (home.root / "queue.bad").exists()


def qstate_dirs() -> list[str]:
    from mailyard.queue.layout import STATE_DIRS

    return list(STATE_DIRS)
