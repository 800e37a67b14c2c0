"""The queue sampler: a task of the panel that records Todo, Local and Remote every minute."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from . import queue_view, rrd

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.panel.sampler")


def sample_once(home: Home, when: int | None = None) -> dict[str, int]:
    """Count the queue now and store the counts; returns them."""
    counts = queue_view.stats(home)
    rrd.record(rrd.rrd_path(home), counts, when)
    return counts


async def run_sampler(home: Home, interval: float = rrd.STEP_SECONDS) -> None:
    """Sample at once, then at every minute boundary, until cancelled; failures are logged."""
    while True:
        try:
            await asyncio.to_thread(sample_once, home)
        except Exception as exc:  # a sample lost is no reason to stop the panel
            log.warning("queue sample failed: %s", exc)
        await asyncio.sleep(interval - time.time() % interval + 0.5)
