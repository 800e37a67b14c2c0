"""The selector reads only what the period covers: rotated files skipped by name, the start
found by bisection, the lines in between copied unchanged (measured by the kernel's count of
bytes the process read, /proc/self/io `rchar`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailyard.logtools.tai64n import unix_to_tai64n

HOUR = 3600
FILE_BYTES = 16 * 1024 * 1024
ROTATED_FILES = 10
SRC = Path(__file__).resolve().parents[2] / "src"

# Runs one tool in-process and prints, on stderr, how many bytes the process read in all.
READS = """\
import sys
from mailyard.logtools.cli import main
status = main(sys.argv[1:])
sys.stdout.flush()
with open("/proc/self/io") as io:
    fields = dict(line.split(": ") for line in io.read().splitlines())
print("rchar", fields["rchar"], file=sys.stderr)
sys.exit(status)
"""

BODY = [b"new msg {n}", b"info msg {n}: bytes 2345 from <alice@example.com> qp {n} uid 1001",
        b"starting delivery {n}: msg {n} to remote bob@example.net",
        b"status: local 0/10 remote 1/20",
        b"delivery {n}: success: 192.0.2.7_accepted_message./Remote_host_said:_250_2.0.0_OK/",
        b"status: local 0/10 remote 0/20", b"end msg {n}"]


def _write(path: Path, start: float, end: float, size: int,
           skip: tuple[float, float]) -> tuple[bytes, int | None]:
    """A log of about `size` bytes stamped evenly from start to end, with no line in `skip`;
    its bytes and the offset of its first line after `skip` (None if none)."""
    block = [line.decode() for line in BODY]
    one = sum(len(line) + 27 for line in BODY)
    count = size // one
    out: list[str] = []
    after = None
    length = 0
    for i in range(count):
        t = start + (end - start) * i / count
        if skip[0] <= t <= skip[1]:
            continue
        if after is None and t > skip[1]:
            after = length
        stamp = "@" + unix_to_tai64n(t) + " "
        lines = [stamp + line.format(n=i + 1) + "\n" for line in block]
        length += sum(len(line) for line in lines)
        out.extend(lines)
    data = "".join(out).encode()
    path.write_bytes(data)
    return data, after


def _run(args: list[str], env: dict[str, str]) -> tuple[bytes, int]:
    proc = subprocess.run([sys.executable, "-c", READS, *args], capture_output=True, env=env,
                          timeout=120, check=True)
    rchar = int(proc.stderr.decode().split("rchar ")[1].split()[0])
    return proc.stdout, rchar


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, bytes, int]:
    """Ten rotated 16 MB files of an hour each and a small `current`, quiet around 3 h ago."""
    logdir = tmp_path_factory.mktemp("send")
    now = time.time()
    quiet = (now - 3 * HOUR - 600, now - 3 * HOUR + 600)
    data = []
    start = None
    for k in range(ROTATED_FILES + 1):
        begin = now - (11 - k) * HOUR - HOUR / 2
        close = begin + HOUR
        name = f"@{unix_to_tai64n(close)}.s" if k < ROTATED_FILES else "current"
        size = FILE_BYTES if k < ROTATED_FILES else 1024 * 1024
        written, after = _write(logdir / name, begin, min(close, now - 60), size, quiet)
        if start is None and after is not None:
            # the first line after the quiet minutes: from there on is "the last 3 hours"
            start = sum(len(d) for d in data) + after
        data.append(written)
    return logdir, now, b"".join(data), start


def test_last_3_hours_over_rotated_files_reads_only_what_the_period_covers(rotated) -> None:
    logdir, _now, whole, start = rotated
    env = dict(os.environ, PYTHONPATH=str(SRC), TZ="UTC")
    out, rchar = _run(["qmail-last-x", "3 hours", "--logdir", str(logdir)], env)
    assert out == whole[start:]  # byte for byte, from the first line of the period
    _, baseline = _run(["qmail-last-x", "1 second", "--logdir", str(logdir)], env)
    covered = len(whole) - start
    # what the 3 hours cost beyond reading nothing: the covered bytes, plus the bisection's
    # probes (a few small windows); far from the 160 MB of the whole log
    assert covered <= rchar - baseline + 1024 * 1024
    assert rchar - baseline <= covered + 512 * 1024
    assert covered + 512 * 1024 < len(whole) / 4


def test_start_end_inside_one_rotated_file_stops_at_the_end(rotated) -> None:
    logdir, now, whole, _start = rotated
    env = dict(os.environ, PYTHONPATH=str(SRC), TZ="UTC")
    begin, end = int(now - 8 * HOUR), int(now - 7 * HOUR - 1200)
    out, rchar = _run(["qmail-start-end", str(begin), str(end), "--logdir", str(logdir)], env)
    lines = out.splitlines()
    stamps = [int(line[1:17], 16) - (1 << 62) - 10 for line in lines]
    assert stamps[0] >= begin and stamps[-1] <= end
    first = whole.index(lines[0] + b"\n")
    assert out == whole[first:first + len(out)]  # one unbroken stretch of the log
    before = whole.rfind(b"\n", 0, first - 1) + 1
    after = first + len(out)
    assert int(whole[before + 1:before + 17], 16) - (1 << 62) - 10 < begin
    assert int(whole[after + 1:after + 17], 16) - (1 << 62) - 10 >= end
    _, baseline = _run(["qmail-last-x", "1 second", "--logdir", str(logdir)], env)
    assert rchar - baseline <= len(out) + 512 * 1024
