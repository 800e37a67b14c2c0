"""syncfs(2) rounds made by a child process, for an event loop that must not wait for them.

`SyncProcess` is the child: one octet down a pipe asks for a `syncfs` of its filesystem, one
octet back answers (0: done, else the errno). `LoopSync` shares those rounds between the
callers on one event loop, one child per filesystem, with the rule of `fssync.SharedRounds`:
a caller is covered by a round that *starts* after its call, so while one runs the callers
that ask wait for the next, which covers them all.

Why a process and not a thread: a thread of ours needs the GIL back after each call to hand
over its result, and under load the event loop holds it, so every round cost a hand-off of
the GIL both ways and a wake-up of the executor's thread and of the loop (strace counted 10
futex calls per message in the SMTP service, and about 120 per message in send, whose
batches each made several such hops). The child needs no GIL of ours: the loop writes an
octet and goes on, and reads the answer when its descriptor becomes readable. The child is
forked (it shares its parent's memory until it writes to it, so it adds little), dies with
its parent (PR_SET_PDEATHSIG), and keeps its own descriptor of the filesystem: syncfs reports
a writeback error once per open file description, so after a failure it opens a new one,
never retrying on the old.

`LoopSync.run(steps)` drives a batch written as a generator (`fssync.Steps`): the generator
does its file work on the loop and yields the directories whose filesystems must be synced
before its next step; a failed round is thrown into it as the OSError.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from .children import die_with_parent
from .fssync import MAX_PATHS, Steps, syncfs_fd

R = TypeVar("R")


class SyncProcess:
    """The child that calls syncfs(2) when asked (see the module's docstring)."""

    def __init__(self, open_fd: Callable[[], int],
                 syncfs: Callable[[int], None] = syncfs_fd) -> None:
        parent = os.getpid()
        ask_r, ask_w = os.pipe2(os.O_CLOEXEC)
        answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: nothing but the rounds
            code = 1
            try:
                _only_descriptors(ask_r, answer_w)  # the clients' sockets must close with us
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    # a stop of the service's group must not end a round under way: the child
                    # ends when its parent closes the pipe, or dies with it
                    signal.signal(sig, signal.SIG_IGN)
                die_with_parent(parent)
                _serve_rounds(open_fd, syncfs, ask_r, answer_w)
                code = 0
            finally:
                os._exit(code)
        os.close(ask_r)
        os.close(answer_w)
        os.set_blocking(answer_r, False)
        self.pid = pid
        self._ask = ask_w
        self.answers = answer_r  # readable when a round has ended
        self.ended = False

    def ask(self) -> None:
        """Start a round (the answer comes on `answers`)."""
        try:
            os.write(self._ask, b"\1")
        except OSError:
            self.ended = True  # the child is gone: the answer is an end of file

    def answer(self) -> int | None:
        """The answer of the round that ended (0 or an errno), None if none is there yet;
        raises EOFError when the child has ended."""
        try:
            data = os.read(self.answers, 1)
        except BlockingIOError:
            return None
        if not data:
            self.ended = True
            raise EOFError
        return data[0]

    def close(self) -> None:
        """End the child and collect it."""
        for fd in (self._ask, self.answers):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _only_descriptors(*keep: int) -> None:
    """Close every descriptor but 0-2 and `keep` (the forked child must not hold its parent's
    sockets open: a client would never see its connection end)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _serve_rounds(open_fd: Callable[[], int], syncfs: Callable[[int], None], ask: int,
                  answer: int) -> None:
    """The sync process's loop: a syncfs per octet asked, until the asking side closes."""
    fd = open_fd()
    while True:
        if not os.read(ask, 1):
            return
        try:
            syncfs(fd)
            code = 0
        except OSError as err:
            code = (err.errno or errno.EIO) & 0xFF or errno.EIO
            os.close(fd)  # the error was reported on this description: never again on it
            fd = open_fd()
        os.write(answer, bytes([code]))


class _Filesystem:
    """One filesystem's child and its rounds: the one under way, and the next."""

    def __init__(self, dev: int, directory: str) -> None:
        self.dev = dev
        self.directory = directory  # a directory of it, opened again after a failed round
        self.process: SyncProcess | None = None
        self.running: asyncio.Future[None] | None = None
        self.pending: asyncio.Future[None] | None = None  # the callers of the next round


class LoopSync:
    """syncfs rounds per filesystem for the callers on one event loop (the module's
    docstring). A failed round fails its callers and those already waiting for the next
    (their writes may have been among the pages whose write-back failed, and syncfs reports
    the error once), as `fssync.FsSync` does."""

    def __init__(self, syncfs: Callable[[int], None] = syncfs_fd) -> None:
        self._syncfs = syncfs  # (tests hand in one that fails)
        self._filesystems: dict[int, _Filesystem] = {}
        self._devs: dict[str, int] = {}  # directory -> its filesystem (st_dev)
        self.rounds = 0  # syncfs calls answered (for tests and benchmarks)

    def _filesystem(self, directory: str) -> _Filesystem:
        dev = self._devs.get(directory)
        if dev is None:
            if len(self._devs) >= MAX_PATHS:
                self._devs.clear()
            dev = self._devs[directory] = os.stat(directory).st_dev
        state = self._filesystems.get(dev)
        if state is None:
            state = self._filesystems[dev] = _Filesystem(dev, directory)
        return state

    async def sync(self, directory: str | Path) -> None:
        """Return once a syncfs of `directory`'s filesystem begun after this call succeeded;
        the OSError of the round otherwise."""
        await self.sync_all([directory])

    async def sync_all(self, directories: Iterable[str | Path]) -> None:
        """`sync` for several directories: one round per filesystem among them."""
        waits: list[asyncio.Future[None]] = []
        seen: set[int] = set()
        for directory in directories:
            state = self._filesystem(os.fspath(directory))
            if id(state) not in seen:
                seen.add(id(state))
                waits.append(self._join(state))
        error: OSError | None = None
        for wait in waits:  # every round awaited, so none is left with an unread error
            try:
                await wait
            except OSError as err:
                error = error or err
        if error is not None:
            raise error

    async def run(self, steps: Steps[R]) -> R:
        """Drive a batch's steps: each yield's directories synced, a failure thrown in."""
        try:
            directories = next(steps)
            while True:
                try:
                    if directories:
                        await self.sync_all(directories)
                except OSError as err:
                    directories = steps.throw(err)
                else:
                    directories = steps.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def close(self) -> None:
        """End the children (every round has been answered: callers await theirs)."""
        for state in list(self._filesystems.values()):
            self._stop(state, OSError(errno.EIO, "the sync process is stopping"))

    # ---- the rounds ---------------------------------------------------------------------------
    def _join(self, state: _Filesystem) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if state.running is None:
            mine = state.running = loop.create_future()
            self._start(state)  # (a child that is gone fails `mine` at once)
            return mine
        if state.pending is None:
            state.pending = loop.create_future()
        return state.pending

    def _start(self, state: _Filesystem) -> None:
        """Ask the filesystem's child for the round `state.running` (forked if need be)."""
        if state.process is None:
            directory = state.directory
            state.process = SyncProcess(
                lambda: os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
                self._syncfs)
            asyncio.get_running_loop().add_reader(state.process.answers, self._on_answer,
                                                  state)
        state.process.ask()
        if state.process.ended:
            self._stop(state, OSError(errno.EIO, "the sync process ended"))

    def _on_answer(self, state: _Filesystem) -> None:
        assert state.process is not None
        try:
            code = state.process.answer()
        except EOFError:
            self._stop(state, OSError(errno.EIO, "the sync process ended"))
            return
        if code is None:
            return
        self.rounds += 1
        done, state.running = state.running, None
        if code:
            error = OSError(code, os.strerror(code))
            _settle(done, error)
            failed, state.pending = state.pending, None
            _settle(failed, error)
            return
        _settle(done, None)
        if state.pending is not None:
            state.running, state.pending = state.pending, None
            self._start(state)

    def _stop(self, state: _Filesystem, error: OSError) -> None:
        """The child is gone (or going): its rounds fail, and the filesystem is forgotten, so
        the next caller forks a new child on a directory of its own (the one remembered may
        be what went)."""
        if state.process is not None:
            try:
                asyncio.get_running_loop().remove_reader(state.process.answers)
            except RuntimeError:
                pass  # no loop runs any more (the service is stopping)
            state.process.close()
            state.process = None
        if self._filesystems.get(state.dev) is state:
            del self._filesystems[state.dev]
            self._devs = {k: v for k, v in self._devs.items() if v != state.dev}
        running, pending = state.running, state.pending
        state.running = state.pending = None
        _settle(running, error)
        _settle(pending, error)


def _settle(future: asyncio.Future[None] | None, error: OSError | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
