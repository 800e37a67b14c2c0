"""The selectors: the send-log lines of a period, oldest first, passed on byte for byte.

`qmail-last-x PERIOD` selects from now minus PERIOD to now; `qmail-start-end START END` a
closed interval.  A selector parses only what it needs to find the period:

* in a multilog directory, a rotated file (`@<tai64n>.s`) is named after the moment it was
  closed, so a file closed before START is skipped without being opened, and once a file
  reaches past END the later ones are not opened either;
* inside a file (the log is in time order), the first line at or after START and the first
  line after END are found by bisection on the stamps, reading a few small windows;
* every line in between is copied as it is (stamp, bytes, line end), without being parsed:
  turning stamps into readable times is the operators' work, for the lines they print.

Standard input cannot be bisected: there each line's stamp is read until START, then lines
are copied until one is after END.  The last line of a file without its line end (being
written right now) is not passed on and is counted.  Nothing is kept between runs.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from mailyard.logtools.sources import SourceError, first_stamp, log_files
from mailyard.logtools.tai64n import Clock, split_stamp
from mailyard.logtools.tracking import Diagnostics

# Bytes read at each step of a bisection: a few qmail-send lines (the longest, a delivery
# report, is at most about 1000 bytes; longer lines make the window grow as needed).
PROBE_BYTES = 4096
# Below this span the bisection stops and the rest is read line by line: one read of this
# size costs less than the dozen small seeks and reads it would save.
SCAN_BYTES = 65536
# Block size for copying the selected bytes when sendfile(2) cannot be used.
COPY_BYTES = 1 << 20

TimeTest = Callable[[float], bool]


def _line_time(line: bytes, clock: Clock) -> float | None:
    """Unix time of a log line's stamp, None if the line has no readable stamp."""
    s = split_stamp(line.decode("latin-1"))
    if s is None:
        return None
    try:
        return clock.unix(s)
    except ValueError:
        return None


def _lines_from(f: BinaryIO, pos: int, hi: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every whole line starting in [pos, hi), `pos` being a line start."""
    f.seek(pos)
    buf = b""
    base = pos
    want = PROBE_BYTES
    while base < hi:
        chunk = f.read(want)
        if not chunk:
            return
        buf += chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if base + start >= hi:
                return
            yield base + start, buf[start:nl + 1]
            start = nl + 1
        base += start
        buf = buf[start:]
        want = max(want, len(buf) * 2)  # a line longer than the window: read more at once


def _line_start_after(f: BinaryIO, pos: int, hi: int) -> int:
    """The first line start at or after `pos` (`pos` may be inside a line); `hi` if none."""
    if pos == 0:
        return 0
    f.seek(pos - 1)
    read = 0
    while pos - 1 + read < hi:
        chunk = f.read(PROBE_BYTES)
        if not chunk:
            return hi
        nl = chunk.find(b"\n")
        if nl >= 0:
            return min(pos + read + nl, hi)
        read += len(chunk)
    return hi


def first_line_where(f: BinaryIO, lo: int, hi: int, test: TimeTest, clock: Clock) -> int:
    """Offset of the first line in [lo, hi) whose stamp passes `test`, else `hi`.

    `lo` is a line start, `test` is false then true along the file (the log is in time
    order).  Lines without a readable stamp go with the line after them.
    """
    while hi - lo > SCAN_BYTES:
        mid = _line_start_after(f, (lo + hi) // 2, hi)
        found = None
        for offset, line in _lines_from(f, mid, hi):
            t = _line_time(line, clock)
            if t is not None:
                found = (offset, offset + len(line), t)
                break
        if found is None:
            hi = mid  # nothing readable in the upper half: the answer is below it (or hi)
            continue
        offset, after, t = found
        if test(t):
            hi = offset
        else:
            lo = after
    candidate = None
    for offset, line in _lines_from(f, lo, hi):
        if candidate is None:
            candidate = offset
        t = _line_time(line, clock)
        if t is None:
            continue
        if test(t):
            return candidate
        candidate = None
    return hi


def _copy(f: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    """Copy bytes [start, end) of `f` to `out` unchanged."""
    if end <= start:
        return
    out.flush()
    try:
        out_fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        out_fd = -1
    offset = start
    if out_fd >= 0:
        try:
            while offset < end:
                sent = os.sendfile(out_fd, f.fileno(), offset, end - offset)
                if sent == 0:
                    return
                offset += sent
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):  # this output cannot take it
                raise
    f.seek(offset)
    while offset < end:
        chunk = f.read(min(COPY_BYTES, end - offset))
        if not chunk:
            return
        out.write(chunk)
        offset += len(chunk)


def _complete_size(f: BinaryIO, size: int) -> int:
    """Where the last whole line of a file ends (a last line without its line end is cut)."""
    if size == 0:
        return 0
    pos = size
    while pos > 0:
        step = min(PROBE_BYTES, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return pos - step + nl + 1
        pos -= step
    return 0


def _select_file(f: BinaryIO, name: str, out: BinaryIO, diag: Diagnostics, start: float,
                 end: float | None, whole_start: bool, whole_end: bool) -> bool:
    """Copy the period's lines of one seekable log file; True if the period ends in it."""
    clock = Clock()
    size = os.fstat(f.fileno()).st_size
    complete = _complete_size(f, size)
    if complete < size:
        diag.problem("truncated", f"{name} at byte {complete}")
    a = 0 if whole_start else first_line_where(f, 0, complete, lambda t: t >= start, clock)
    if end is None or whole_end:
        b = complete
    else:
        b = first_line_where(f, a, complete, lambda t: t > end, clock)
    _copy(f, out, a, b)
    return b < complete


def _select_directory(logdir: Path, out: BinaryIO, diag: Diagnostics, start: float,
                      end: float | None) -> None:
    previous_close: float | None = None
    for lf in log_files(logdir):
        closed = lf.rotated_at
        # Every line of a rotated file was written before the file was closed (its name).
        if closed is not None and closed < start:
            previous_close = closed
            continue
        # And every line of a file was written after the previous file was closed.
        if end is not None and previous_close is not None and previous_close > end:
            return
        try:
            f = open(lf.path, "rb")  # noqa: SIM115
        except OSError:
            previous_close = closed
            continue  # rotated away by multilog between listing and opening
        with f:
            whole_start = previous_close is not None and previous_close >= start
            whole_end = end is not None and closed is not None and closed <= end
            if _select_file(f, str(lf.path), out, diag, start, end, whole_start, whole_end):
                return
        previous_close = closed


def _select_stream(stream: BinaryIO, out: BinaryIO, diag: Diagnostics, start: float,
                   end: float | None) -> float | None:
    """Select from a stream that cannot seek; the time of its first readable line."""
    clock = Clock()
    first: float | None = None
    started = False
    pending = b""
    while True:
        chunk = stream.read(COPY_BYTES)
        if not chunk:
            break
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        pending = data[cut:]
        block = data[:cut]
        if started and end is None:
            out.write(block)
            continue
        pos = 0
        while pos < len(block):
            nl = block.index(b"\n", pos) + 1
            line = block[pos:nl]
            t = _line_time(line, clock)
            if t is not None and first is None:
                first = t
            if not started:
                if t is not None and t >= start:
                    started = True
                    if end is None:
                        out.write(block[pos:])
                        break
                else:
                    pos = nl
                    continue
            if end is not None and t is not None and t > end:
                return first
            out.write(line)
            pos = nl
    if pending:
        diag.problem("truncated", "<stdin> last line")
    return first


def select(out: BinaryIO, err: TextIO, diag: Diagnostics, start: float, end: float | None,
           logdir: Path | None = None, file: str | None = None) -> None:
    """Write the lines stamped in [start, end] (end None: no upper bound) unchanged."""
    clock = Clock()
    if file is not None and file != "-":
        path = Path(file)
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"cannot read {file}: {exc.strerror}") from exc
        with f:
            if not path.is_file():  # a pipe or a terminal given by name
                _warn(start, _select_stream(f, out, diag, start, end), clock, err)
                return
            _warn(start, _oldest(path, clock), clock, err)
            _select_file(f, file, out, diag, start, end, False, False)
        return
    if file == "-":
        first = _select_stream(sys.stdin.buffer, out, diag, start, end)
        _warn(start, first, clock, err)
        return
    directory = logdir or Path(".")
    files = log_files(directory)
    _warn(start, _oldest(files[0].path, clock) if files else None, clock, err)
    _select_directory(directory, out, diag, start, end)


def _oldest(path: Path, clock: Clock) -> float | None:
    s = first_stamp(path)
    if s is None:
        return None
    try:
        return clock.unix(s)
    except ValueError:
        return None


def _warn(start: float, oldest: float | None, clock: Clock, err: TextIO) -> None:
    if oldest is None:
        print("Warning: We have no send log lines at all.", file=err)
    elif start < oldest:
        when = clock.local_text(int(oldest))
        print(f"Warning: We only have logs dating back to {when}.", file=err)


def now() -> float:
    """The current time; one place so a test can see which clock the selectors use."""
    return time.time()
