"""syncfs rounds made by a child process for an event loop (sync_process.LoopSync): shared by
the callers that ask during one, failures reaching every caller they covered, a child that
died replaced, and a batch's steps driven with the rounds between them.

The child is a real forked process calling the real syncfs(2) unless a test hands in a
function of its own (which then runs in the child: what it sees of the parent is a copy, so
the tests talk to it through files).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Generator
from pathlib import Path

import pytest

from mailyard.fssync import run_steps, syncfs_fd
from mailyard.sync_process import LoopSync


def _calls(marker: Path) -> int:
    return len(marker.read_bytes()) if marker.exists() else 0


def _counting(marker: Path, fail: bool = False, hold: Path | None = None):
    """A syncfs for the child: one octet appended to `marker` per call; with `hold`, each
    call waits until that file exists; with `fail`, every call fails with EIO."""
    def syncfs(fd: int) -> None:
        with open(marker, "ab") as f:
            f.write(b".")
        while hold is not None and not hold.exists():
            os.sched_yield()
        if fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        syncfs_fd(fd)
    return syncfs


async def _until(condition, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_callers_during_a_round_share_the_next_one(tmp_path: Path) -> None:
    marker, hold = tmp_path / "calls", tmp_path / "go"

    async def main() -> list[str]:
        sync = LoopSync(_counting(marker, hold=hold))
        first = asyncio.ensure_future(sync.sync(tmp_path))
        await _until(lambda: _calls(marker) == 1)  # the first round is under way
        others = [asyncio.ensure_future(sync.sync(tmp_path)) for _ in range(7)]
        await asyncio.sleep(0.05)
        hold.touch()
        outcomes = ["ok" if r is None else repr(r)
                    for r in await asyncio.gather(first, *others, return_exceptions=True)]
        sync.close()
        return outcomes

    assert asyncio.run(main()) == ["ok"] * 8
    assert _calls(marker) == 2  # the first caller's round, then one for the seven others


def test_a_failed_round_fails_its_callers_and_those_waiting_for_the_next(
        tmp_path: Path) -> None:
    marker, hold = tmp_path / "calls", tmp_path / "go"

    async def main() -> list[BaseException | None]:
        sync = LoopSync(_counting(marker, fail=True, hold=hold))
        first = asyncio.ensure_future(sync.sync(tmp_path))
        await _until(lambda: _calls(marker) == 1)
        others = [asyncio.ensure_future(sync.sync(tmp_path)) for _ in range(4)]
        await asyncio.sleep(0.05)
        hold.touch()
        outcomes = await asyncio.gather(first, *others, return_exceptions=True)
        sync.close()
        return outcomes

    outcomes = asyncio.run(main())
    # Their writes may have been among the pages whose write-back failed: every one fails.
    assert all(isinstance(o, OSError) and o.errno == errno.EIO for o in outcomes), outcomes
    assert _calls(marker) == 1


def test_a_child_that_died_fails_its_round_and_is_replaced(tmp_path: Path) -> None:
    marker, hold = tmp_path / "calls", tmp_path / "go"

    async def main() -> tuple[BaseException | None, int, int]:
        sync = LoopSync(_counting(marker, hold=hold))
        round_ = asyncio.ensure_future(sync.sync(tmp_path))
        await _until(lambda: _calls(marker) == 1)
        (state,) = sync._filesystems.values()
        assert state.process is not None
        dead = state.process.pid
        os.kill(dead, signal.SIGKILL)
        lost = (await asyncio.gather(round_, return_exceptions=True))[0]
        hold.touch()
        await sync.sync(tmp_path)  # a new child makes this round
        (state,) = sync._filesystems.values()
        assert state.process is not None
        new = state.process.pid
        sync.close()
        return lost, dead, new

    lost, dead, new = asyncio.run(main())
    assert isinstance(lost, OSError) and lost.errno == errno.EIO
    assert new != dead
    with pytest.raises(ChildProcessError):  # the dead child was collected
        os.waitpid(dead, os.WNOHANG)


def _steps(log: list[str], tmp_path: Path) -> Generator[list[str], None, list[str]]:
    """Two steps with a round between them and after them, noting what each round did."""
    (tmp_path / "one").write_bytes(b"1")
    try:
        yield [str(tmp_path)]
        log.append("first round ok")
    except OSError as err:
        log.append(f"first round failed: {err.errno}")
    (tmp_path / "two").write_bytes(b"2")
    yield []  # nothing to sync: the driver goes straight on
    try:
        yield [str(tmp_path), str(tmp_path)]  # one filesystem: one round
        log.append("second round ok")
    except OSError as err:
        log.append(f"second round failed: {err.errno}")
    return sorted(p.name for p in tmp_path.iterdir() if p.name in ("one", "two"))


def test_steps_are_driven_with_a_round_between_them(tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    log: list[str] = []

    async def main() -> list[str]:
        sync = LoopSync(_counting(marker))
        try:
            return await sync.run(_steps(log, tmp_path))
        finally:
            sync.close()

    assert asyncio.run(main()) == ["one", "two"]
    assert log == ["first round ok", "second round ok"]
    assert _calls(marker) == 2


def test_a_failed_round_is_thrown_into_the_steps(tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    log: list[str] = []

    async def main() -> list[str]:
        sync = LoopSync(_counting(marker, fail=True))
        try:
            return await sync.run(_steps(log, tmp_path))
        finally:
            sync.close()

    assert asyncio.run(main()) == ["one", "two"]
    assert log == [f"first round failed: {errno.EIO}", f"second round failed: {errno.EIO}"]


def test_the_same_steps_run_in_a_thread_with_run_steps(tmp_path: Path) -> None:
    log: list[str] = []
    assert run_steps(_steps(log, tmp_path)) == ["one", "two"]
    assert log == ["first round ok", "second round ok"]
