"""Group commit for directory fsyncs: several deliveries that renamed into the same Maildir
`new/` at about the same time share one fsync of it.

A caller's rename is covered by a sync round that *starts* after the rename. While a round
runs, new callers wait for the next one, which then covers them all; so N concurrent
deliveries into one mailbox cost about two rounds instead of N. A failed round fails every
caller it covered (each then defers its message), and a later round opens the directory
again: a failed fsync is never retried on the same descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..durable import fsync_dir
from ..fssync import RoundState, SharedRounds

# Directories whose round state is kept; a busy node delivers to many mailboxes, and the
# state of an idle one is only a few integers.
MAX_DIRECTORIES = 4096


class GroupSync:
    """fsync of a directory, shared between the threads that ask for it at once."""

    def __init__(self, sync: Callable[[Path], None] = fsync_dir) -> None:
        self._sync = sync
        self._rounds = SharedRounds(fail_pending=False)
        self._dirs: dict[Path, RoundState] = {}

    @property
    def rounds(self) -> int:
        """fsyncs done, for tests and benchmarks."""
        return self._rounds.rounds

    @property
    def waiting(self) -> int:
        """Callers waiting for a round started by another."""
        return self._rounds.waiting

    def _state(self, directory: Path) -> RoundState:
        # Called with the rounds' lock held.
        state = self._dirs.get(directory)
        if state is None:
            if len(self._dirs) >= MAX_DIRECTORIES:
                for key in [k for k, v in self._dirs.items()
                            if v.running is None and v.pending is None]:
                    del self._dirs[key]
            state = self._dirs[directory] = RoundState()
        return state

    def sync(self, directory: Path) -> None:
        """Return once a directory fsync that began after this call has succeeded."""
        self._rounds.run(lambda: self._state(directory), lambda _state: self._sync(directory))
