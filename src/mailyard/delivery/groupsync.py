"""Group commit for directory fsyncs: several deliveries that renamed into the same Maildir
`new/` at about the same time share one fsync of it.

A caller's rename is covered by a sync round that *starts* after the rename. While a round
runs, new callers wait for the next one, which then covers them all; so N concurrent
deliveries into one mailbox cost about two rounds instead of N. A failed round fails every
caller it covered (each then defers its message), and a later round opens the directory
again: a failed fsync is never retried on the same descriptor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..durable import fsync_dir

# Directories whose round state is kept; a busy node delivers to many mailboxes, and the
# state of an idle one is only a few integers.
MAX_DIRECTORIES = 4096


class _Round:
    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


class _Directory:
    def __init__(self) -> None:
        self.running: _Round | None = None  # the fsync under way
        self.pending: _Round | None = None  # the next one: covers everyone waiting for it


class GroupSync:
    """fsync of a directory, shared between the threads that ask for it at once."""

    def __init__(self, sync: Callable[[Path], None] = fsync_dir) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._dirs: dict[Path, _Directory] = {}
        self.rounds = 0  # fsyncs done, for tests and benchmarks
        self.waiting = 0  # callers waiting for a round started by another

    def sync(self, directory: Path) -> None:
        """Return once a directory fsync that began after this call has succeeded."""
        with self._cond:
            state = self._dirs.get(directory)
            if state is None:
                if len(self._dirs) >= MAX_DIRECTORIES:
                    for key in [k for k, v in self._dirs.items()
                                if v.running is None and v.pending is None]:
                        del self._dirs[key]
                state = self._dirs[directory] = _Directory()
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
                    self._cond.wait()
                self.waiting -= 1
        if leader:
            try:
                self._sync(directory)
            except OSError as err:
                mine.error = err
            with self._cond:
                mine.done = True
                state.running = None
                self.rounds += 1
                self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
