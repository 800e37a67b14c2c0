"""Several worker processes for one SMTP service: one parent, N workers, one listening socket.

The parent binds the ports (as root), drops privileges, makes the shared table
(`shared.SharedState`) and forks `smtp.workers` workers. Every worker accepts on the same
listening sockets (the kernel hands each new connection to one of them) and runs its own event
loop, queue committer and store view. The parent serves no client; it

- owns the service log: workers send their lines over a socketpair, a few milliseconds'
  worth in one datagram (`LogPipe`), and the parent stamps and writes them at once, so there
  is one writer (rotation stays safe) and lines are in the order the parent received them,
  which is time order (the log tools bisect on it);
- passes SIGHUP to every worker and logs `reload service=…` once all of them have reloaded;
- on SIGTERM logs `stopping`, passes it on, waits for every worker to finish (each gives a
  message under way its grace period) and logs `stopped` last;
- starts a worker again when one dies, after clearing its column of the shared table.

Workers die with the parent (PR_SET_PDEATHSIG), so a SIGKILL of the parent, or of the whole
group as supervisord's killasgroup does, leaves no worker behind; a message is only ever
answered 250 once durable, so nothing a client was told is lost.
"""

from __future__ import annotations

import asyncio
import errno
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from ..children import die_with_parent
from ..logs import LogDir
from .shared import MAX_WORKERS, SharedState

# Longer log lines are cut (a line of ours is far shorter; a filter's message might not be).
MAX_LINE = 16 * 1024
# A datagram carries a worker's lines, newline-separated, up to this size (well under the
# socket's default send buffer of 208 KiB on Linux).
MAX_DATAGRAM = 64 * 1024
# Seconds a worker holds a log line at most before sending it to the parent, so that the
# lines of several turns go together; a line is stamped at most this much after it was
# written (multilog stamps on arrival too). An accepted message's line does not wait.
LOG_HOLD = 0.005
# Receive buffer of the parent's end: room for bursts of lines while it writes.
LOG_SOCKET_BUFFER = 4 * 1024 * 1024
# A worker that dies within this many seconds of its start is started again only after this
# long, so a worker that cannot start does not make the parent fork in a tight loop.
RESPAWN_DELAY = 1.0
# How often the parent looks at its children when nothing else wakes it (seconds).
PARENT_TICK = 1.0
_CONTROL = b"\0"  # first octet of a datagram that is a message to the parent, not a log line
_RELOADED = b"reloaded "


class LogPipe:
    """A worker's log: its lines go to the parent (which stamps them) in batches, one
    datagram each: a line waits at most LOG_HOLD, or until `flush`, which the conversation
    calls when it has logged an accepted message, before the client can see its 250. So the
    line of every answered message is in the parent's hands first (the parent writes what
    it receives at once); a SIGKILL of the service can lose the other lines of its workers'
    last LOG_HOLD (connections, ends, refusals), and what the parent had not yet written.

    A busy worker writes three lines per message; a datagram per message or fewer, instead
    of one per line, saves sends and, above all, the parent's wake-ups (each costs it about
    25 us). Lines written where no event loop runs (start-up, another thread) are sent at
    once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "replace")[:MAX_LINE]
        if b"\n" in data:  # the separator of the datagram's lines (the parent shows it as ?)
            data = data.replace(b"\n", b"?")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._send(data)
            return
        if self._size + len(data) >= MAX_DATAGRAM:
            self.flush()
        self._pending.append(data)
        self._size += len(data) + 1
        if self._timer is None:
            self._timer = loop.call_later(LOG_HOLD, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Send the lines held so far (after LOG_HOLD, for an accepted message at once, and
        before the worker exits). A timer already set stays: it finds less or nothing to
        send, which costs less than cancelling it and setting another."""
        if self._pending:
            data = b"\n".join(self._pending)
            self._pending, self._size = [], 0
            self._send(data)

    def reloaded(self, line: str) -> None:
        """Tell the parent this worker has reloaded (it logs once all of them have)."""
        self.flush()  # the lines before it first
        self._send(_CONTROL + _RELOADED + line.encode("utf-8", "replace")[:MAX_LINE])

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError:
            pass  # the parent is gone: this worker is about to die with it

    def close(self) -> None:
        self.flush()
        self._sock.close()


def worker_count(configured: int) -> int:
    """`smtp.workers`: 0 means one per CPU this process may run on."""
    if configured > 0:
        return min(configured, MAX_WORKERS)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


class Parent:
    """The parent of the workers of one service (see the module's docstring)."""

    def __init__(self, service: str, count: int, log: LogDir, shared: SharedState,
                 serve: Callable[[int, LogPipe], None]) -> None:
        self.service = service
        self.count = count
        self.log = log
        self.shared = shared
        self._serve = serve
        self.children: dict[int, int] = {}  # pid -> worker index
        self._started: dict[int, float] = {}  # worker index -> monotonic start
        self._respawn_at: dict[int, float] = {}  # worker index -> when to start it again
        self._flags: set[int] = set()
        self._stopping = False
        self._reloaded: list[str] = []
        self._next_reap = 0.0  # when to look for ended workers without a SIGCHLD
        self._mine, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._mine.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LOG_SOCKET_BUFFER)
        self._mine.setblocking(False)

    # ---- workers -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            pipe = LogPipe(self._theirs)
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                die_with_parent(parent)
                self._mine.close()
                self.shared.worker = index
                self._serve(index, pipe)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                pipe.write(f"worker-error worker={index} "
                           + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
            finally:
                pipe.flush()  # the last turn's lines
                sys.stdout.flush()
                os._exit(code)
        self.children[pid] = index
        self._started[index] = time.monotonic()

    def _reap(self) -> None:
        self._flags.discard(signal.SIGCHLD)
        self._next_reap = time.monotonic() + PARENT_TICK
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            self.shared.forget_worker(index)
            if self._stopping:
                continue
            self.log.write(f"worker-died service={self.service} worker={index} pid={pid} "
                           f"status={_status(status)}")
            young = time.monotonic() - self._started.get(index, 0.0) < RESPAWN_DELAY
            self._respawn_at[index] = time.monotonic() + (RESPAWN_DELAY if young else 0.0)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, at in list(self._respawn_at.items()):
            if at <= now and not self._stopping:
                del self._respawn_at[index]
                self._spawn(index)

    # ---- the log -------------------------------------------------------------------------------
    def _drain_log(self) -> None:
        """Every line waiting from the workers, appended to the log in one write (one write
        and one fstat per wake-up instead of per line: the lines of a busy second arrive
        together)."""
        lines: list[bytes] = []
        try:
            while True:
                try:
                    data = self._mine.recv(MAX_DATAGRAM + MAX_LINE + 64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as err:
                    if err.errno == errno.EAGAIN:
                        return
                    raise
                if data.startswith(_CONTROL):
                    if lines:  # the lines before it first: the log stays in time order
                        self.log.write_encoded(b"".join(lines))
                        lines = []
                    self._control(data[1:])
                else:
                    lines.append(self.log.encode_lines(
                        data.decode("utf-8", "replace").split("\n")))
        finally:
            if lines:
                self.log.write_encoded(b"".join(lines))

    def _control(self, message: bytes) -> None:
        if message.startswith(_RELOADED):
            self._reloaded.append(message[len(_RELOADED):].decode("utf-8", "replace"))
            if len(self._reloaded) >= len(self.children):
                self.log.write(f"{self._reloaded[-1]} workers={len(self._reloaded)}")
                self._reloaded = []

    # ---- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._flags.add(signum)

    def _handle_flags(self) -> None:
        flags, self._flags = self._flags, set()
        if flags & {signal.SIGTERM, signal.SIGINT} and not self._stopping:
            self._stopping = True
            self._respawn_at.clear()
            self.log.write(f"stopping service={self.service} workers={len(self.children)}")
            self._tell_all(signal.SIGTERM)
        if signal.SIGHUP in flags and not self._stopping:
            self._reloaded = []
            self._tell_all(signal.SIGHUP)

    def _tell_all(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # ---- the parent's loop ---------------------------------------------------------------------
    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ)
        selector.register(self._mine, selectors.EVENT_READ)
        try:
            for index in range(self.count):
                self._spawn(index)
            while True:
                ready = {key.fd for key, _ in selector.select(PARENT_TICK)}
                if wake_r in ready:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                self._drain_log()
                # Woken by a worker's lines, the parent has nothing else to do: waitpid only
                # after a SIGCHLD, and once a tick in case one was missed.
                if signal.SIGCHLD in self._flags or time.monotonic() >= self._next_reap:
                    self._reap()
                if self._flags:
                    self._handle_flags()
                if self._respawn_at:
                    self._respawn_due()
                if self._stopping and not self.children:
                    self._drain_log()
                    break
        finally:
            signal.set_wakeup_fd(-1)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)
            self._theirs.close()
            self._mine.close()


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
