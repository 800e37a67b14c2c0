"""The queue directory: its sub-directories, the trigger, and cheap counts of each state.

The layout and the invariants that hold between its directories are in docs/queue.md.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .. import safefs
from ..services.privileges import chown_path, running_as_root
from .commit import GroupCommit
from .errors import QueueError
from .inject import MessageWriter

# Sub-directories of a queue, in the order a message passes through them.
#   tmp/    messages being written, and envelopes being written at commit
#   mess/   message data, named by queue id
#   todo/   committed envelopes not yet split into local and remote (the commit point)
#   info/   envelope of a split message (sender and origin)
#   local/  local recipients, one line each: T (to do) or D (done) + address
#   remote/ remote recipients, same format
#   bounce/ failure reports waiting to be sent back as a bounce
#   lock/   the trigger FIFO
#   hold/   messages held by the administrator (holds.py)
#   attempts/ deferred deliveries' attempt counts and last replies (attempts.py)
STATE_DIRS: tuple[str, ...] = ("tmp", "mess", "todo", "info", "local", "remote", "bounce", "lock",
                               "hold", "attempts")
# The queues an administrator names and counts: Todo (before the split), Local and Remote.
QUEUES: tuple[str, ...] = ("todo", "local", "remote")
TRIGGER = "lock/trigger"


class Queue:
    """One queue directory; creating the object creates the layout if it is missing."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._root_text = str(self.root)
        self._committer: GroupCommit | None = None
        try:
            self._make_layout()
        except OSError as err:
            raise QueueError(f"queue: cannot prepare {self.root}: {err.strerror or err}") from err

    def _make_layout(self) -> None:
        fresh = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        for name in STATE_DIRS:
            path = self.root / name
            if not path.is_dir():
                path.mkdir(mode=0o750)
                chown_path(path)
        fifo = self.root / TRIGGER
        if not fifo.exists():
            try:
                os.mkfifo(fifo, 0o620)
            except FileExistsError:
                pass
            chown_path(fifo)
        elif not stat.S_ISFIFO(fifo.stat().st_mode):
            raise QueueError(f"queue: {fifo} exists but is not a FIFO; remove it")
        if fresh and running_as_root():
            chown_path(self.root)

    def path(self, state: str, qid: str) -> Path:
        return self.root / state / qid

    def file(self, state: str, qid: str) -> str:
        """The same path as `path`, as a string: for the per-message file operations of the
        send service, where building Path objects was a measurable share of its CPU."""
        return f"{self._root_text}/{state}/{qid}"

    def state_dir_fd(self, state: str) -> int:
        """An O_PATH descriptor of a state directory, opened from the queue's parent without
        following a link (the queue is the mail owner's; root writes in it too)."""
        return safefs.open_dir(self.root.parent, f"{self.root.name}/{state}")

    # ---- injection ------------------------------------------------------------------------------
    def open_message(self) -> MessageWriter:
        """A writer for one new message; use it as a context manager (see MessageWriter)."""
        return MessageWriter(self)

    @property
    def committer(self) -> GroupCommit:
        """This process's group committer for the queue (started on first use)."""
        if self._committer is None:
            self._committer = GroupCommit(self)
        return self._committer

    def trigger(self) -> None:
        """Wake the send service, if it runs, to look at the queue now (never blocks)."""
        fd = self.open_trigger()
        if fd is None:
            return
        try:
            self.pull_trigger(fd)
        finally:
            os.close(fd)

    @staticmethod
    def pull_trigger(fd: int) -> None:
        """Write the wake-up octet to a trigger opened by `open_trigger`; OSError (EPIPE)
        when its reader has gone (the descriptor is then of no more use)."""
        try:
            os.write(fd, b"\0")
        except BlockingIOError:
            pass  # a full pipe is already a pending wake-up

    def open_trigger(self) -> int | None:
        """The trigger FIFO open for writing, or None when nobody listens (send not running)
        or something else stands in its place."""
        try:
            fd = os.open(f"{self._root_text}/{TRIGGER}",
                         os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            if err.errno in (errno.ENXIO, errno.ENOENT, errno.EACCES, errno.ELOOP):
                return None  # nobody listening: send looks at the whole queue when it starts
            raise
        try:
            is_fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise
        if not is_fifo:  # a file put in the FIFO's place: never written to
            os.close(fd)
            return None
        return fd

    # ---- counts ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Messages not yet preprocessed (todo), and with local or remote deliveries to do."""
        return {state: _count(self.root / state) for state in QUEUES}

    def ids(self, state: str) -> list[str]:
        """Queue ids present in one state directory (numeric ids only)."""
        try:
            names = os.listdir(self.root / state)
        except FileNotFoundError:
            return []
        return [n for n in names if n.isdigit()]


def _count(path: Path) -> int:
    try:
        with os.scandir(path) as entries:
            return sum(1 for e in entries if e.name.isdigit())
    except FileNotFoundError:
        return 0
