"""The queue's round-robin storage with the real rrdtool: samples in, Cur/Avg/Max and graphs out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from panel_helpers import start_helper, stop_process

from mailyard.home import Home
from mailyard.panel import rrd, sampler
from mailyard.queue import Envelope, Queue

STEP = rrd.STEP_SECONDS


def _fill(path: Path, minutes: int) -> int:
    """One sample a minute, on minute boundaries, ending now: remote is 1 and jumps to 4 for
    the last ten minutes, local counts 0, 1, 2 over and over, todo stays 0."""
    start = int(time.time()) // STEP * STEP - minutes * STEP
    for i in range(minutes):
        counts = {"todo": 0, "local": i % 3, "remote": 4 if i >= minutes - 10 else 1}
        assert rrd.record(path, counts, start + (i + 1) * STEP)
    return start + minutes * STEP


def test_cur_avg_and_max_over_the_last_day(tmp_path: Path) -> None:
    path = tmp_path / "queue.rrd"
    _fill(path, 60)
    day = rrd.summary(path, "day")
    assert day["remote"] == {"cur": 4.0, "avg": pytest.approx(1.5), "max": 4.0}
    assert day["local"]["cur"] == 2.0 and day["local"]["max"] == 2.0
    assert day["local"]["avg"] == pytest.approx(1.0)
    assert day["todo"] == {"cur": 0.0, "avg": 0.0, "max": 0.0}


def test_the_week_and_month_keep_the_peak(tmp_path: Path) -> None:
    path = tmp_path / "queue.rrd"
    _fill(path, 120)
    for period in ("week", "month"):
        numbers = rrd.summary(path, period)
        assert numbers["remote"]["cur"] == 4.0
        assert numbers["local"]["max"] == 2.0, period
        assert 1.0 <= numbers["remote"]["avg"] < 4.0, period


def test_a_sample_at_or_before_the_last_one_is_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "queue.rrd"
    last = _fill(path, 5)
    assert not rrd.record(path, {"todo": 9, "local": 9, "remote": 9}, last)
    assert not rrd.record(path, {"todo": 9, "local": 9, "remote": 9}, last - 120)
    assert rrd.last_update(path) == last
    assert rrd.summary(path, "day")["remote"]["max"] == 4.0  # never the refused 9


def test_an_empty_store_reads_as_zero(tmp_path: Path) -> None:
    numbers = rrd.summary(tmp_path / "new.rrd", "week")
    assert all(v == {"cur": 0.0, "avg": 0.0, "max": 0.0} for v in numbers.values())


def test_graphs_render_as_png_and_svg(tmp_path: Path) -> None:
    path = tmp_path / "queue.rrd"
    _fill(path, 30)
    png = rrd.render(path, "day", "png")
    svg = rrd.render(path, "week", "svg")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg[:400]
    with pytest.raises(ValueError):
        rrd.render(path, "day", "gif")
    with pytest.raises(ValueError):
        rrd.summary(path, "year")


def test_a_path_with_a_colon_is_read_correctly(tmp_path: Path) -> None:
    path = tmp_path / "odd:dir" / "queue.rrd"
    _fill(path, 10)
    assert rrd.summary(path, "day")["remote"]["cur"] == 4.0
    assert rrd.render(path, "day", "png")[:4] == b"\x89PNG"


def test_the_sampler_records_the_real_queue(home: Home) -> None:
    queue = Queue(home.queue_dir)
    for n in range(3):
        with queue.open_message() as w:
            w.write(b"Subject: sample\n\nx\n")
            w.commit(Envelope(sender="a@example.net", recipients=[f"r{n}@example.net"]))
    when = int(time.time()) // STEP * STEP
    helper = start_helper(home)  # the panel counts the queue through its root helper
    try:
        assert sampler.sample_once(home, when - STEP) == {"todo": 3, "local": 0, "remote": 0}
        assert sampler.sample_once(home, when) == {"todo": 3, "local": 0, "remote": 0}
    finally:
        stop_process(helper)
    path = rrd.rrd_path(home)
    assert path == home.var_dir / "rrd" / "queue.rrd"
    assert rrd.summary(path, "day")["todo"]["cur"] == 3.0
