"""Injection: a committed message is in todo/ with its data; an abandoned one leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailyard.queue import Envelope, Queue, QueueError


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_commit_puts_data_and_envelope_in_the_queue(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    with q.open_message() as w:
        w.write(b"Subject: hello\r\n\r\n")
        w.write(b"body\r\n")
        assert w.path.read_bytes() == b"Subject: hello\r\n\r\nbody\r\n"
        qid = w.commit(Envelope(sender="a@example.org", recipients=["b@example.net"], uid=7))
    assert (q.root / "mess" / qid).read_bytes() == b"Subject: hello\r\n\r\nbody\r\n"
    env = Envelope.from_bytes((q.root / "todo" / qid).read_bytes())
    assert env.sender == "a@example.org" and env.recipients == ["b@example.net"]
    assert env.uid == 7 and env.size == 24 and env.qp == os.getpid() and env.time > 0
    assert q.counts() == {"todo": 1, "local": 0, "remote": 0}
    assert os.listdir(q.root / "tmp") == []


def test_leaving_without_commit_removes_the_partial_message(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    with pytest.raises(RuntimeError):
        with q.open_message() as w:
            w.write(b"x" * 200_000)
            raise RuntimeError("client went away")
    with q.open_message() as w:
        w.write(b"never committed")
    assert _files(q.root) == []
    assert q.counts() == {"todo": 0, "local": 0, "remote": 0}


def test_bad_envelope_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    with q.open_message() as w:
        w.write(b"data")
        with pytest.raises(QueueError, match="line break"):
            w.commit(Envelope(sender="a@b\r\nRCPT TO:<x@y>", recipients=["c@d"]))
    with q.open_message() as w:
        w.write(b"data")
        with pytest.raises(QueueError, match="at least one recipient"):
            w.commit(Envelope(sender="", recipients=[]))
    assert _files(q.root) == []


def test_queue_ids_are_distinct_for_live_messages(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    ids = set()
    for n in range(50):
        with q.open_message() as w:
            w.write(b"m%d" % n)
            ids.add(w.commit(Envelope(sender="", recipients=["x@y.test"])))
    assert len(ids) == 50 and q.counts()["todo"] == 50
