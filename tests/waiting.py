"""The one way tests wait: poll a condition until it holds, never sleep and hope.

Tests assert on outcomes, not on timing, so the limit is generous: a loaded 2-CPU CI machine
must not turn a slow success into a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_SECONDS = 60.0
POLL_SECONDS = 0.05


def wait_until(predicate: Callable[[], T], timeout: float = WAIT_SECONDS,
               what: str = "condition") -> T:
    """The first truthy value of `predicate()`; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)


def wait_for(predicate: Callable[[], T], what: str, timeout: float = WAIT_SECONDS) -> T:
    """`wait_until` with the description first, as most of the browser and service tests read."""
    return wait_until(predicate, timeout, what)
