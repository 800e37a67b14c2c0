"""Child processes that end with their parent: SMTP workers and the queue's sync process."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a child just forked from `parent`: have the kernel SIGKILL it when the parent dies
    (so a SIGKILL of the parent, or of its group, leaves nothing behind); exit now if the
    parent died before this call."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
