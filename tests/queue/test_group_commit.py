"""Group commit: messages finishing together share the sync rounds, each is answered only once
its own files and names are durable, and a failure fails exactly what it covered. Both ways
of syncing are run: one syncfs of the filesystem (one round per message, after the renames)
and fsyncs of each file and directory (two rounds: the files, then the names)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailyard.queue import Envelope, Queue, QueueError, TornMessage
from mailyard.queue import commit as C
from mailyard.queue import state as qstate

METHODS = [C.SYNCFS, C.FSYNC]  # the project's machines run Linux 5.8 or later


def envelope(i: int) -> Envelope:
    return Envelope(sender=f"s{i}@example.org", recipients=[f"r{i}@example.net"])


def queue(tmp_path: Path, method: str) -> Queue:
    q = Queue(tmp_path / "queue")
    q._committer = C.GroupCommit(q, method)
    return q


class FileEvent:
    """An event both the test and the sync process (a forked child) see: a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self) -> None:
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.path.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class Counter:
    """A count both processes add to: one octet appended per call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    def add(self) -> int:
        with open(self.path, "ab") as f:
            f.write(b".")
        return self.value

    @property
    def value(self) -> int:
        return self.path.stat().st_size


class Gate:
    """Holds the first sync round at its start until the test opens it (a real sync runs
    after): meanwhile the next messages gather. The syncfs rounds run in the committer's sync
    process, so its state is in files."""

    def __init__(self, real: Callable[..., Any], where: Path) -> None:
        self.real = real
        self.entered = FileEvent(where / "gate-entered")
        self.open = FileEvent(where / "gate-open")
        self._calls = Counter(where / "gate-calls")

    @property
    def calls(self) -> int:
        return self._calls.value

    def __call__(self, *args: Any) -> Any:
        self._calls.add()
        self.entered.set()
        self.open.wait(timeout=30)
        return self.real(*args)


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def gate_rounds(monkeypatch: pytest.MonkeyPatch, method: str, where: Path) -> Gate:
    if method == C.SYNCFS:
        gate = Gate(C.syncfs, where)
        monkeypatch.setattr(C, "syncfs", gate)
    else:
        gate = Gate(C.GroupCommit._round, where)

        def gated(self: C.GroupCommit, *args: Any) -> Any:
            return gate(self, *args)

        monkeypatch.setattr(C.GroupCommit, "_round", gated)
    return gate


def test_messages_finishing_during_a_round_are_committed_together(
        tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    q = queue(tmp_path, method)
    gate = gate_rounds(monkeypatch, method, tmp_path)
    count = 20

    async def main() -> list[str]:
        first = q.open_message()
        first.write(b"Subject: 0\r\n\r\nbody 0\r\n")
        tasks = [asyncio.ensure_future(q.committer.commit(first, envelope(0)))]
        await asyncio.to_thread(gate.entered.wait, 30)  # the first round is under way
        for i in range(1, count):
            w = q.open_message()
            w.write(f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())
            tasks.append(asyncio.ensure_future(q.committer.commit(w, envelope(i))))
        await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)  # nobody is answered before the rounds
        gate.open.set()
        return await asyncio.gather(*tasks)

    qids = asyncio.run(main())
    q.committer.close()
    assert len(set(qids)) == count
    for i, qid in enumerate(qids):
        assert (q.root / "mess" / qid).read_bytes() == f"Subject: {i}\r\n\r\nbody {i}\r\n".encode()
        assert Envelope.from_bytes((q.root / "todo" / qid).read_bytes()).sender == \
            f"s{i}@example.org"
    if method == C.SYNCFS:  # round 1: the first, files and names; 2: the 19 others
        assert q.committer.rounds == 2 and gate.calls == 2
    else:  # 1: the first's files; 2: its names and the 19 others' files; 3: their names
        assert q.committer.rounds == 3 and gate.calls == 3
    assert q.committer.batches == 2 and q.committer.messages == count
    assert os.listdir(q.root / "tmp") == []


def test_with_fsync_no_message_is_renamed_before_a_round_covered_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = queue(tmp_path, C.FSYNC)
    gate = gate_rounds(monkeypatch, C.FSYNC, tmp_path)

    async def main() -> str:
        w = q.open_message()
        w.write(b"held\r\n")
        task = asyncio.ensure_future(q.committer.commit(w, envelope(0)))
        await asyncio.to_thread(gate.entered.wait, 30)
        # staged in tmp/ (data and envelope), not yet in the queue
        assert len(os.listdir(q.root / "tmp")) == 2
        assert os.listdir(q.root / "todo") == [] and os.listdir(q.root / "mess") == []
        gate.open.set()
        return await task

    qid = asyncio.run(main())
    q.committer.close()
    assert os.listdir(q.root / "todo") == [qid] and os.listdir(q.root / "tmp") == []


def test_a_message_whose_fsync_fails_fails_alone(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    q = queue(tmp_path, C.FSYNC)
    gate = gate_rounds(monkeypatch, C.FSYNC, tmp_path)

    async def main() -> list[object]:
        first = q.open_message()
        first.write(b"held\r\n")
        tasks = [asyncio.ensure_future(q.committer.commit(first, envelope(0)))]
        await asyncio.to_thread(gate.entered.wait, 30)
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
        await asyncio.sleep(0)
        gate.open.set()
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
    q = queue(tmp_path, C.FSYNC)

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


def test_with_syncfs_a_message_is_renamed_at_once_and_answered_after_the_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One round per message: the names are in the queue before the round that makes them
    and the files durable, and the envelope records what send checks a torn message by."""
    q = queue(tmp_path, C.SYNCFS)
    gate = gate_rounds(monkeypatch, C.SYNCFS, tmp_path)
    body = b"Subject: one round\r\n\r\nbody\r\n"

    async def main() -> str:
        w = q.open_message()
        w.write(body)
        task = asyncio.ensure_future(q.committer.commit(w, envelope(0)))
        await asyncio.to_thread(gate.entered.wait, 30)
        assert os.listdir(q.root / "tmp") == []
        assert len(os.listdir(q.root / "todo")) == 1 and len(os.listdir(q.root / "mess")) == 1
        await asyncio.sleep(0.05)
        assert not task.done()  # renamed, not yet answered: the round has not returned
        gate.open.set()
        return await task

    qid = asyncio.run(main())
    q.committer.close()
    env = Envelope.from_bytes((q.root / "todo" / qid).read_bytes())
    assert (env.size, env.crc32) == (len(body), zlib.crc32(body))
    qstate.check_data(q, qid, env)  # whole: no TornMessage
    (q.root / "mess" / qid).write_bytes(body[:-1])
    with pytest.raises(TornMessage):
        qstate.check_data(q, qid, env)
    assert q.committer.rounds == 1 and gate.calls == 1


def test_a_failed_syncfs_fails_everything_it_covered_and_uses_a_new_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = queue(tmp_path, C.SYNCFS)
    real, real_open = C.syncfs, C.GroupCommit._open_queue_fd
    calls, opens = Counter(tmp_path / "calls"), Counter(tmp_path / "opens")
    second, release = FileEvent(tmp_path / "second"), FileEvent(tmp_path / "release")

    def failing(fd: int) -> None:  # the first round (the first message) fails
        if calls.add() == 1:
            second.set()
            release.wait(timeout=30)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    def counted_open(self: C.GroupCommit) -> int:
        opens.add()
        return real_open(self)

    monkeypatch.setattr(C, "syncfs", failing)
    monkeypatch.setattr(C.GroupCommit, "_open_queue_fd", counted_open)

    async def main() -> tuple[list[object], object, str]:
        committer = q.committer
        begun = committer.generation  # a message begun before the failure
        late = q.open_message()
        late.write(b"begun early\r\n")
        first = q.open_message()
        first.write(b"first\r\n")
        tasks = [asyncio.ensure_future(committer.commit(first, envelope(0)))]
        await asyncio.to_thread(second.wait, 30)
        for i in (1, 2):  # committed while the failing round runs
            w = q.open_message()
            w.write(b"more\r\n")
            tasks.append(asyncio.ensure_future(committer.commit(w, envelope(i))))
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        early = await asyncio.gather(committer.commit(late, envelope(3), begun),
                                     return_exceptions=True)
        fresh = q.open_message()
        fresh.write(b"after\r\n")
        qid = await committer.commit(fresh, envelope(4), committer.generation)
        return results, early[0], qid

    results, early, qid = asyncio.run(main())
    q.committer.close()
    assert len(results) == 3
    assert all(isinstance(r, QueueError) and r.temporary for r in results)
    assert isinstance(early, QueueError) and early.temporary
    # the three were renamed before the failure was reported: kept (a duplicate at worst;
    # send's check removes one whose data was lost); the one begun early is gone
    assert len(os.listdir(q.root / "todo")) == 4 and qid in os.listdir(q.root / "todo")
    assert os.listdir(q.root / "tmp") == []
    assert opens.value == 2  # the failure was never retried on the descriptor that had it
    assert calls.value == 2


def test_if_the_sync_process_dies_what_it_held_fails_for_now_and_a_new_one_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = queue(tmp_path, C.SYNCFS)
    gate = gate_rounds(monkeypatch, C.SYNCFS, tmp_path)

    async def main() -> tuple[object, str, int]:
        committer = q.committer
        w = q.open_message()
        w.write(b"held\r\n")
        task = asyncio.ensure_future(committer.commit(w, envelope(0)))
        await asyncio.to_thread(gate.entered.wait, 30)
        assert committer._sync is not None
        dead = committer._sync.pid
        os.kill(dead, signal.SIGKILL)
        held = (await asyncio.gather(task, return_exceptions=True))[0]
        gate.open.set()
        fresh = q.open_message()
        fresh.write(b"after\r\n")
        qid = await committer.commit(fresh, envelope(1), committer.generation)
        assert committer._sync is not None and committer._sync.pid != dead
        return held, qid, dead

    held, qid, dead = asyncio.run(main())
    q.committer.close()
    assert isinstance(held, QueueError) and held.temporary
    # renamed before the round: kept, as after any failed round (send checks its data)
    assert len(os.listdir(q.root / "todo")) == 2 and qid in os.listdir(q.root / "todo")
    with pytest.raises(ChildProcessError):
        os.waitpid(dead, os.WNOHANG)  # collected: no zombie left


def test_the_sync_process_holds_none_of_the_workers_sockets(tmp_path: Path) -> None:
    """Forked from a server, it must not keep a client's connection open after the server
    closed it (the client would never see the end)."""
    q = queue(tmp_path, C.SYNCFS)
    ours, client = socket.socketpair()

    async def main() -> None:
        w = q.open_message()
        w.write(b"one\r\n")
        await q.committer.commit(w, envelope(0))  # the sync process was forked for this

    asyncio.run(main())
    assert q.committer._sync is not None
    ours.close()
    client.settimeout(10)
    assert client.recv(1) == b""  # the end of the connection reached the client
    q.committer.close()
    client.close()


def test_a_lone_message_takes_one_round_with_syncfs_and_two_with_fsync(
        tmp_path: Path, method: str) -> None:
    q = queue(tmp_path, method)

    async def main() -> str:
        w = q.open_message()
        w.write(b"one\r\n")
        return await q.committer.commit(w, envelope(0))

    qid = asyncio.run(main())
    q.committer.close()
    assert (q.root / "mess" / qid).read_bytes() == b"one\r\n"
    assert q.committer.rounds == (1 if method == C.SYNCFS else 2)
    assert q.committer.batches == 1


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="syncfs or fsync"):
        C.GroupCommit(Queue(tmp_path / "queue"), "fdatasync-maybe")


def test_the_trigger_stays_open_between_rounds_and_is_opened_again_after_send_left(
        tmp_path: Path) -> None:
    q = queue(tmp_path, C.SYNCFS)
    fifo = str(q.root / "lock" / "trigger")

    async def one(i: int) -> None:
        w = q.open_message()
        w.write(b"x\r\n")
        await q.committer.commit(w, envelope(i))

    async def main() -> None:
        committer = q.committer
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # send, listening
        await one(0)
        kept = committer._trigger
        await one(1)
        assert kept is not None and committer._trigger == kept  # not opened again
        assert os.read(reader, 16) == b"\0\0"  # one wake-up per round
        os.close(reader)  # send stops
        await one(2)  # the write finds no reader: the descriptor is dropped
        assert committer._trigger is None
        await one(3)  # nobody listens: nothing to open
        assert committer._trigger is None
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # send is back
        await one(4)
        assert committer._trigger is not None and os.read(reader, 16) == b"\0"
        os.close(reader)

    asyncio.run(main())
    q.committer.close()
    assert q.committer._trigger is None
