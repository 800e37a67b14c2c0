"""Round-robin storage of the queue's counts (HOME/var/rrd/queue.rrd), driven through `rrdtool`.

We run Debian's `rrdtool` program (argument lists, never a shell) rather than compiling the
Python binding: it is the same library, nothing has to be built at install time, and a
sample a minute costs one short process. Every argument is ours; none comes from a request.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..queue.layout import QUEUES

if TYPE_CHECKING:
    from ..home import Home

RRDTOOL = shutil.which("rrdtool") or "/usr/bin/rrdtool"
# One sample a minute, as the guide's queue graphs; a sample may be up to 3 minutes late
# (rrdtool's heartbeat) before that stretch counts as unknown.
STEP_SECONDS = 60
HEARTBEAT_SECONDS = 180
SERIES: tuple[str, ...] = QUEUES
# Archives: per minute for a day, per 5 minutes for a week, per 30 minutes for a month, per
# day for two years; each as AVERAGE and MAX so the graphs can show both.
ARCHIVES: tuple[tuple[int, int], ...] = ((1, 1500), (5, 2100), (30, 1550), (1440, 800))
PERIODS: dict[str, int] = {"day": 86400, "week": 7 * 86400, "month": 31 * 86400}
# The resolution each period is read at: the step of the archive that covers it.
PERIOD_STEPS: dict[str, int] = {"day": STEP_SECONDS, "week": 5 * STEP_SECONDS,
                                "month": 30 * STEP_SECONDS}
RRDTOOL_TIMEOUT_SECONDS = 30


class RrdError(RuntimeError):
    """rrdtool failed; the message carries what it said."""


def rrd_path(home: Home) -> Path:
    return home.var_dir / "rrd" / "queue.rrd"


def _run(args: list[str]) -> bytes:
    env = dict(os.environ, LC_ALL="C")
    try:
        done = subprocess.run([RRDTOOL, *args], capture_output=True, env=env,
                              timeout=RRDTOOL_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RrdError(f"rrdtool {args[0]}: {exc}") from None
    if done.returncode != 0:
        raise RrdError(f"rrdtool {args[0]}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _escape(path: Path) -> str:
    """A path as rrdtool reads it inside DEF: colons escaped."""
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def ensure(path: Path, start: int | None = None) -> None:
    """Create the file with its archives if it does not exist yet."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    begin = int(start if start is not None else time.time()) - STEP_SECONDS
    args = ["create", str(path), "--step", str(STEP_SECONDS), "--start", str(begin)]
    args += [f"DS:{name}:GAUGE:{HEARTBEAT_SECONDS}:0:U" for name in SERIES]
    for cf in ("AVERAGE", "MAX"):
        args += [f"RRA:{cf}:0.5:{steps}:{rows}" for steps, rows in ARCHIVES]
    _run(args)


def last_update(path: Path) -> int:
    return int(_run(["last", str(path)]).strip() or 0)


def record(path: Path, counts: dict[str, int], when: int | None = None) -> bool:
    """Store one sample; False (and nothing stored) when `when` is not after the last one."""
    stamp = int(when if when is not None else time.time())
    ensure(path, stamp)
    if stamp <= last_update(path):
        return False
    values = ":".join(str(max(0, int(counts.get(name, 0)))) for name in SERIES)
    _run(["update", str(path), f"{stamp}:{values}"])
    return True


def _window(path: Path, period: str) -> list[str]:
    """--start, --end and --step of a period, ending with the last complete sample."""
    if period not in PERIODS:
        raise ValueError(f"period {period!r}: one of {', '.join(PERIODS)}")
    step = PERIOD_STEPS[period]
    end = last_update(path)
    return ["--start", str(end - PERIODS[period]), "--end", str(end), "--step", str(step)]


def _fetch(path: Path, cf: str, step: int, start: int, end: int) -> list[list[float]]:
    """Rows of (todo, local, remote) from the archive of `cf` at resolution `step`; NaN where
    nothing was sampled."""
    out = _run(["fetch", str(path), cf, "-r", str(step), "-s", str(start), "-e", str(end)])
    rows: list[list[float]] = []
    for line in out.decode().split("\n"):
        stamp, colon, rest = line.partition(":")
        if not colon or not stamp.strip().isdigit() or int(stamp) > end:
            continue
        rows.append([float(v) for v in rest.split()])
    return rows


def summary(path: Path, period: str) -> dict[str, dict[str, float]]:
    """Cur (the newest sample), Avg and Max of every series over the last `period`
    (day, week, month). Stretches without samples are left out of the average."""
    if period not in PERIODS:
        raise ValueError(f"period {period!r}: one of {', '.join(PERIODS)}")
    ensure(path)
    end = last_update(path)
    step = PERIOD_STEPS[period]
    start = end - PERIODS[period]
    newest = _fetch(path, "AVERAGE", STEP_SECONDS, end - 10 * STEP_SECONDS, end)
    averages = _fetch(path, "AVERAGE", step, start, end)
    peaks = _fetch(path, "MAX", step, start, end)
    result: dict[str, dict[str, float]] = {}
    for i, name in enumerate(SERIES):
        known_now = [row[i] for row in newest if not math.isnan(row[i])]
        known = [row[i] for row in averages if not math.isnan(row[i])]
        known_peaks = [row[i] for row in peaks if not math.isnan(row[i])]
        result[name] = {"cur": known_now[-1] if known_now else 0.0,
                        "avg": round(sum(known) / len(known), 4) if known else 0.0,
                        "max": max(known_peaks) if known_peaks else 0.0}
    return result


# Colours of the graph: remote as a filled area, local as a line on top (the guide's figure).
_REMOTE_COLOUR = "#4a78b0"
_LOCAL_COLOUR = "#d9822b"


def _legend(label: str, numbers: dict[str, float]) -> str:
    text = (f"{label}  Cur: {numbers['cur']:8.2f}   Avg: {numbers['avg']:8.2f}   "
            f"Max: {numbers['max']:8.2f}")
    return text.replace(":", "\\:") + "\\n"


def render(path: Path, period: str, fmt: str = "png") -> bytes:
    """The graph 'Mail Queue - Combined' over the last `period`, as PNG or SVG bytes, with the
    Cur, Avg and Max of the remote and local queues under it."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"format {fmt!r}: png or svg")
    numbers = summary(path, period)
    end = last_update(path)
    src = _escape(path)
    args = ["graph", "-", "--imgformat", fmt.upper(),
            "--start", str(end - PERIODS[period]), "--end", str(end),
            "--title", f"Mail Queue - Combined (last {period})", "--vertical-label", "Messages",
            "--width", "640", "--height", "160", "--lower-limit", "0", "--units-exponent", "0",
            "--color", "BACK#ffffff", "--color", "SHADEA#ffffff", "--color", "SHADEB#ffffff",
            f"DEF:remote={src}:remote:AVERAGE", f"DEF:local={src}:local:AVERAGE",
            f"AREA:remote{_REMOTE_COLOUR}:Remote Queue",
            f"LINE2:local{_LOCAL_COLOUR}:Local Queue\\n",
            "COMMENT:" + _legend("Remote Queue", numbers["remote"]),
            "COMMENT:" + _legend("Local Queue ", numbers["local"])]
    return _run(args)
