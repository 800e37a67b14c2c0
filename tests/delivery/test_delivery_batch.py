"""The batches of the send service's blocking steps (delivery/batch.py), the Maildir writes
of a batch (maildir.deliver_many), the done marks of a batch (queue/state.mark_done_many)
and the send log's per-turn buffer (sendlog.SendLog)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from mailyard.delivery import maildir
from mailyard.delivery.batch import Batcher, each
from mailyard.delivery.sendlog import SendLog, logsafe
from mailyard.fssync import FS_SYNC
from mailyard.queue import Queue
from mailyard.queue import state as qstate


def test_calls_of_one_turn_share_one_thread_job() -> None:
    seen: list[list[int]] = []
    threads: set[int] = set()

    def double(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        threads.add(threading.get_ident())
        return [2 * i for i in items]

    async def main() -> list[int]:
        batcher: Batcher[int, int] = Batcher(double)
        out = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert batcher.batches == 1 and batcher.items == 10
        return list(out)

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert seen == [list(range(10))]
    assert threading.get_ident() not in threads  # done in a worker thread


def test_calls_made_while_a_batch_runs_go_in_the_next_one() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def slow(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(10)
        return list(items)

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(slow)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first batch is in its thread now
        later = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        release.set()
        assert await first == 0
        assert [await f for f in later] == [1, 2, 3]

    asyncio.run(main())
    assert seen == [[0], [1, 2, 3]]


def test_each_item_gets_its_own_failure_and_a_failed_job_fails_its_batch() -> None:
    def odd_fails(i: int) -> int:
        if i % 2:
            raise OSError(f"item {i}")
        return i

    def broken(items: list[int]) -> list[int | BaseException]:
        raise RuntimeError("the whole job")

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(each(odd_fails))
        out = await asyncio.gather(*(batcher.submit(i) for i in range(4)),
                                   return_exceptions=True)
        assert out[0] == 0 and out[2] == 2
        assert isinstance(out[1], OSError) and str(out[1]) == "item 1"
        assert isinstance(out[3], OSError) and str(out[3]) == "item 3"
        failing: Batcher[int, int] = Batcher(broken)
        out = await asyncio.gather(failing.submit(1), failing.submit(2),
                                   return_exceptions=True)
        assert all(isinstance(x, RuntimeError) for x in out)
        assert await batcher.submit(4) == 4  # the batcher goes on after failures

    asyncio.run(main())


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True)
    return folder


def test_deliver_many_puts_each_message_in_its_folder(tmp_path: Path) -> None:
    a, b = _folder(tmp_path, "a"), _folder(tmp_path, "b")
    missing = tmp_path / "gone"  # no tmp/: that message alone fails
    rounds = FS_SYNC.rounds
    out = maildir.deliver_many([(a, b"one\n"), (missing, b"lost\n"), (b, b"two\n"),
                                (a, b"three\n")])
    assert isinstance(out[1], FileNotFoundError)
    paths = [p for p in out if isinstance(p, Path)]
    assert [p.read_bytes() for p in paths] == [b"one\n", b"two\n", b"three\n"]
    assert [p.parent for p in paths] == [a / "new", b / "new", a / "new"]
    assert os.listdir(a / "tmp") == [] and os.listdir(b / "tmp") == []
    if maildir.SYNC_ROUNDS:  # one filesystem: one round for the files, one for the renames
        assert FS_SYNC.rounds - rounds == 2


def test_mark_done_many_marks_each_recipient(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue")  # (made with its layout)
    lines = qstate.recipient_lines(["a@x.test", "b@x.test"])
    for qid in ("11", "12"):
        Path(queue.file("local", qid)).write_bytes(lines)
    recipients = qstate.parse_recipients(lines)
    out = qstate.mark_done_many(queue, [("local", "11", recipients[1].offset),
                                        ("local", "13", 0),
                                        ("local", "12", recipients[0].offset)])
    assert out[0] is None and out[2] is None and isinstance(out[1], FileNotFoundError)
    done11 = qstate.parse_recipients(Path(queue.file("local", "11")).read_bytes())
    done12 = qstate.parse_recipients(Path(queue.file("local", "12")).read_bytes())
    assert [r.done for r in done11] == [False, True]
    assert [r.done for r in done12] == [True, False]


def test_send_log_writes_a_turns_lines_at_once_and_keeps_order(tmp_path: Path) -> None:
    log = SendLog(tmp_path / "send")
    current = tmp_path / "send" / "current"

    async def main() -> None:
        log.write("new msg 1")
        log.write("end msg 1")
        assert current.read_bytes() == b""  # kept until the turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [x.split(" ", 1)[1] for x in current.read_text().splitlines()] == \
            ["new msg 1", "end msg 1"]
        log.write("new msg 2")
        await asyncio.to_thread(log.write, "warning: from a thread")
        log.write("kept at the stop")

    asyncio.run(main())
    log.close()  # a clean stop loses nothing
    lines = [x.split(" ", 1)[1] for x in current.read_text().splitlines()]
    assert lines == ["new msg 1", "end msg 1", "new msg 2", "warning: from a thread",
                     "kept at the stop"]
    stamps = [x.split(" ", 1)[0] for x in current.read_text().splitlines()]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("line", ["bad\nline"])
def test_send_log_lines_stay_one_line(tmp_path: Path, line: str) -> None:
    log = SendLog(tmp_path / "send")
    log.write(line)
    log.close()
    assert (tmp_path / "send" / "current").read_text().count("\n") == 1


def _logsafe_reference(text: str) -> str:
    return "".join(chr(b) if 33 <= b <= 126 and b != 0x25 else "_"
                   for b in text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("text", ["user@bench.test", "a b", "100%", "tab\there", "é@x.test",
                                  "line/\n", "", "~!", "\x7f", "\udcff", "did_1+0+0/"])
def test_logsafe_fast_path_agrees_with_qmails_rule(text: str) -> None:
    assert logsafe(text) == _logsafe_reference(text)


def test_logsafe_agrees_on_every_single_character() -> None:
    for code in list(range(0, 0x250)) + [0x2028, 0xFEFF, 0x1F600]:
        text = f"a{chr(code)}b"
        assert logsafe(text) == _logsafe_reference(text), hex(code)
