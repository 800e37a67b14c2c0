"""One `syncfs(2)` for many writes: the durability round of the send service's batches.

Making N new small files and their directory entries durable with fsyncs costs N + 1 journal
commits when done one after another, and still N fsync calls (and N woken threads) when done
in parallel. `syncfs` writes back everything dirty on one filesystem and commits the journal
once; measured on the project's VM (bench/README.md, "End-to-end"): 20 files of 2400 octets
in 10-13 ms against 33-40 ms for parallel fsyncs and 130-170 ms for fsyncs in a row, at a
sixth of the CPU.

`FsSync.sync(path)` returns once a `syncfs` of the filesystem holding `path` that *started
after the call* has succeeded; callers that ask while a round runs share the next round, so a
burst of deliveries costs about two rounds. Errors: a round that fails fails every caller it
covered, and also the callers already waiting for the next round (their writes may have been
among the pages whose write-back failed, and the error is reported only once); they make
their files again. The descriptor used for a filesystem is opened once and kept, so a
write-back error that happens between two rounds is reported by the next one (Linux reports
syncfs errors since the descriptor was opened, 5.8 and later).

A batch that needs rounds between its steps can be written once as `Steps`: a generator that
yields the directories to sync before its next step (an OSError of the round is thrown into
it) and returns its answers. `run_steps` drives it here, in the calling thread;
`sync_process.LoopSync.run` drives it on an event loop.

Where `syncfs` is missing (not Linux, or no libc symbol), `available()` is false and the
callers fsync each file and directory as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")
# A batch's steps: yields the directories whose filesystems must be synced before it goes on
# (a failure comes back as the OSError raised at the yield), returns the batch's answers.
Steps = Generator[list[str], None, R]

_LIBC_NAME = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_LIBC_NAME, use_errno=True) if _LIBC_NAME else None
_syncfs = getattr(_libc, "syncfs", None) if _libc is not None else None


def available() -> bool:
    return _syncfs is not None


def syncfs_fd(fd: int) -> None:
    """syncfs(2) of the filesystem holding `fd`; OSError when it fails."""
    if _syncfs is None:
        raise OSError("syncfs is not available on this system")
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# Directories whose filesystem is remembered (a busy node delivers into many mailboxes).
MAX_PATHS = 4096


class _Round:
    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


class RoundState:
    """The sync round under way for one thing being synced, and the next one."""

    def __init__(self) -> None:
        self.running: _Round | None = None
        self.pending: _Round | None = None  # covers everyone who asked while `running` ran


S = TypeVar("S", bound=RoundState)


class SharedRounds:
    """Sync rounds shared by the threads that ask at once (group commit for one sync call).

    A caller is covered by a round that *starts* after its call: while one runs, new callers
    wait for the next, which then covers them all, so a burst costs about two rounds. A failed
    round fails every caller it covered; with `fail_pending`, also those already waiting for
    the next round (for syncfs, whose error is reported once for the whole filesystem).
    """

    def __init__(self, fail_pending: bool) -> None:
        self.cond = threading.Condition()  # also guards the callers' own state tables
        self._fail_pending = fail_pending
        self.rounds = 0  # sync calls made (for tests and benchmarks)
        self.waiting = 0  # callers waiting for a round started by another

    def run(self, lookup: Callable[[], S], action: Callable[[S], None]) -> None:
        """Return once `action` on the state `lookup` finds, begun after this call, succeeded."""
        with self.cond:
            state = lookup()
            if state.running is None:
                mine, leader = _Round(), True
                state.running = mine
            else:
                if state.pending is None:
                    state.pending = _Round()
                mine, leader = state.pending, False
                self.waiting += 1
                while not mine.done:
                    if state.running is None and state.pending is mine:
                        state.pending, state.running, leader = None, mine, True
                        break
                    self.cond.wait()
                self.waiting -= 1
        if leader:
            try:
                action(state)
            except OSError as err:
                mine.error = err
            with self.cond:
                mine.done = True
                state.running = None
                self.rounds += 1
                if (mine.error is not None and self._fail_pending
                        and state.pending is not None):
                    failed, state.pending = state.pending, None
                    failed.error, failed.done = mine.error, True
                self.cond.notify_all()
        if mine.error is not None:
            raise mine.error


class _Filesystem(RoundState):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd


class FsSync:
    """syncfs rounds per filesystem, shared by the threads that ask at once."""

    def __init__(self, syncfs: Callable[[int], None] = syncfs_fd) -> None:
        self._syncfs = syncfs  # (tests hand in one that fails or waits)
        self._rounds = SharedRounds(fail_pending=True)  # see the module's docstring
        self._filesystems: dict[int, _Filesystem] = {}
        self._devs: dict[str, int] = {}  # directory -> its filesystem (st_dev)

    @property
    def rounds(self) -> int:
        return self._rounds.rounds

    @property
    def waiting(self) -> int:
        return self._rounds.waiting

    def _filesystem(self, path: str | Path) -> _Filesystem:
        key = os.fspath(path)
        dev = self._devs.get(key)
        if dev is None:
            if len(self._devs) >= MAX_PATHS:
                self._devs.clear()
            dev = self._devs[key] = os.stat(key).st_dev
        state = self._filesystems.get(dev)
        if state is None:
            # A directory of that filesystem (the one os.stat saw, links followed as by
            # fsync_dir; send runs as the mail owner, never as root), kept open.
            fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            state = self._filesystems.setdefault(dev, _Filesystem(fd))
            if state.fd != fd:
                os.close(fd)
        return state

    def sync(self, directory: str | Path) -> None:
        """Return once a syncfs of `directory`'s filesystem begun after this call succeeded."""
        self._rounds.run(lambda: self._filesystem(directory),
                         lambda state: self._syncfs(state.fd))

    def sync_all(self, directories: Iterable[str | Path]) -> None:
        """`sync` for several directories: one round per filesystem among them, not one per
        directory (a batch of deliveries into many mailboxes of one disk costs one round)."""
        seen: set[int] = set()
        for directory in directories:
            with self._rounds.cond:  # (the state tables are guarded by the rounds' lock)
                state = self._filesystem(directory)
            if id(state) in seen:
                continue
            seen.add(id(state))
            self.sync(directory)

    def close(self) -> None:
        with self._rounds.cond:
            for state in self._filesystems.values():
                os.close(state.fd)
            self._filesystems.clear()


# One for the process: the queue's splits and done marks and the Maildir deliveries share it.
FS_SYNC = FsSync()


def run_steps(steps: Steps[R], sync: FsSync = FS_SYNC) -> R:
    """Drive a batch's steps in this thread, each yield's directories synced by `sync`."""
    try:
        directories = next(steps)
        while True:
            try:
                if directories:
                    sync.sync_all(directories)
            except OSError as err:
                directories = steps.throw(err)
            else:
                directories = steps.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
