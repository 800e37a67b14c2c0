"""Group commit: messages finishing together share the directory fsyncs, each is answered only
once its own files and names are durable, and a failure fails exactly what it covered."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from mailyard.queue import Envelope, MessageWriter, Queue, QueueError
from mailyard.queue import commit as C


class GatedWriter(MessageWriter):
    """A real writer whose commit waits until the test opens the gate (holds a batch open)."""

    def __init__(self, queue: Queue, gate: threading.Event) -> None:
        super().__init__(queue)
        self.gate = gate

    def prepare(self, envelope: Envelope) -> str:
        self.gate.wait()
        return super().prepare(envelope)


def envelope(i: int) -> Envelope:
    return Envelope(sender=f"s{i}@example.org", recipients=[f"r{i}@example.net"])


@pytest.fixture
def entry_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the committer's directory-fsync rounds (each still does the real fsyncs)."""
    calls: list[int] = []
    real = C.sync_entries

    def counted(root: Path) -> None:
        calls.append(1)
        real(root)

    monkeypatch.setattr(C, "sync_entries", counted)
    return calls


def test_messages_finishing_during_a_batch_are_committed_together(
        tmp_path: Path, entry_syncs: list[int]) -> None:
    q = Queue(tmp_path / "queue")
    gate = threading.Event()
    count = 20

    async def main() -> list[str]:
        first = GatedWriter(q, gate)
        first.write(b"Subject: 0\r\n\r\nbody 0\r\n")
        tasks = [asyncio.ensure_future(q.committer.commit(first, envelope(0)))]
        await asyncio.sleep(0)  # the committer has the first message and waits at the gate
        for i in range(1, count):
            w = q.open_message()
            w.write(f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())
            tasks.append(asyncio.ensure_future(q.committer.commit(w, envelope(i))))
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    qids = asyncio.run(main())
    q.committer.close()
    assert len(set(qids)) == count
    for i, qid in enumerate(qids):
        assert (q.root / "mess" / qid).read_bytes() == f"Subject: {i}\r\n\r\nbody {i}\r\n".encode()
        assert Envelope.from_bytes((q.root / "todo" / qid).read_bytes()).sender == \
            f"s{i}@example.org"
    # 19 messages waited while the first batch was on its way: at most two rounds in all
    assert q.committer.batches <= 2 and len(entry_syncs) == q.committer.batches
    assert os.listdir(q.root / "tmp") == []


def test_a_message_whose_fsync_fails_fails_alone(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    gate = threading.Event()

    async def main() -> list[object]:
        first = GatedWriter(q, gate)
        first.write(b"held\r\n")
        tasks = [asyncio.ensure_future(q.committer.commit(first, envelope(0)))]
        await asyncio.sleep(0)
        good = q.open_message()
        good.write(b"fine\r\n")
        bad = q.open_message()
        bad.write(b"lost\r\n")
        # its data goes to a descriptor that cannot be fsynced (a pipe: EINVAL), as a disk
        # error would make the fsync fail
        read_end, write_end = os.pipe()
        os.close(bad._fd)
        bad._fd = write_end
        tasks.append(asyncio.ensure_future(q.committer.commit(good, envelope(1))))
        tasks.append(asyncio.ensure_future(q.committer.commit(bad, envelope(2))))
        gate.set()
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            os.close(read_end)

    held, good_qid, failure = asyncio.run(main())
    q.committer.close()
    assert isinstance(failure, QueueError) and failure.temporary
    assert "save the message to disk" in str(failure)  # the fsync, not the write, failed
    assert isinstance(good_qid, str) and (q.root / "todo" / good_qid).exists()
    assert isinstance(held, str) and (q.root / "todo" / held).exists()
    assert sorted(os.listdir(q.root / "todo")) == sorted([held, good_qid])
    assert os.listdir(q.root / "tmp") == []  # the failed message left nothing behind


def test_a_failed_directory_fsync_fails_the_batch_but_keeps_its_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = Queue(tmp_path / "queue")

    def broken(root: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(C, "sync_entries", broken)

    async def main() -> list[object]:
        writers = []
        for _ in range(3):
            w = q.open_message()
            w.write(b"data\r\n")
            writers.append(w)
        return await asyncio.gather(*(q.committer.commit(w, envelope(i))
                                      for i, w in enumerate(writers)), return_exceptions=True)

    results = asyncio.run(main())
    q.committer.close()
    assert all(isinstance(r, QueueError) and r.temporary for r in results)
    assert "durable" in str(results[0])
    # renamed, maybe not durable: kept (a retry by the client is a duplicate, never a loss)
    assert len(os.listdir(q.root / "todo")) == 3 and len(os.listdir(q.root / "mess")) == 3


def test_a_lone_message_is_committed_like_a_plain_commit(tmp_path: Path,
                                                         entry_syncs: list[int]) -> None:
    q = Queue(tmp_path / "queue")

    async def main() -> str:
        w = q.open_message()
        w.write(b"one\r\n")
        return await q.committer.commit(w, envelope(0))

    qid = asyncio.run(main())
    q.committer.close()
    assert (q.root / "mess" / qid).read_bytes() == b"one\r\n"
    assert q.committer.batches == 1 and len(entry_syncs) == 1
