"""The selectors: the send-log lines of a period, oldest first, with readable local times.

`qmail-last-x PERIOD` selects from now minus PERIOD to now; `qmail-start-end START END` a
closed interval.  Both read every file of the log directory in time order (skipping rotated
files that end before the period) or one file / stdin, and write each selected line as
`YYYY-MM-DD HH:MM:SS.ffffff <qmail-send message>` in local time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from mailyard.logtools.sources import (
    SourceError,
    first_stamp,
    log_files,
    open_text,
    stamped_lines,
    stdin_text,
)
from mailyard.logtools.tai64n import TAI64_UNIX_OFFSET, Clock, Stamped
from mailyard.logtools.tracking import Diagnostics


def _directory_lines(logdir: Path, start: float, end: float | None, diag: Diagnostics,
                     oldest: list[float]) -> Iterator[Stamped]:
    files = log_files(logdir)
    if not files:
        return
    clock = Clock()
    s = first_stamp(files[0].path)
    if s is not None:
        try:
            oldest.append(clock.unix(s))
        except ValueError:
            pass
    previous_close: float | None = None
    for f in files:
        # Every line of a rotated file was written before the file was closed (its name).
        skip = f.rotated_at is not None and f.rotated_at < start
        # And every line of a file was written after the previous file was closed.
        if end is not None and previous_close is not None and previous_close > end:
            skip = True
        previous_close = f.rotated_at
        if skip:
            continue
        try:
            stream = open_text(f.path)
        except OSError:
            continue  # rotated away by multilog between listing and opening
        with stream:
            yield from stamped_lines(stream, str(f.path), diag)


def _stream_lines(file: str, diag: Diagnostics, oldest: list[float]) -> Iterator[Stamped]:
    clock = Clock()
    if file == "-":
        stream: TextIO = stdin_text()
        name = "<stdin>"
    else:
        try:
            stream = open_text(Path(file))
        except OSError as exc:
            raise SourceError(f"cannot read {file}: {exc.strerror}") from exc
        name = file
    with stream:
        for s in stamped_lines(stream, name, diag):
            if not oldest:
                try:
                    oldest.append(clock.unix(s))
                except ValueError:
                    pass
            yield s


def select(out: TextIO, err: TextIO, diag: Diagnostics, start: float, end: float | None,
           logdir: Path | None = None, file: str | None = None) -> int:
    """Write the lines stamped in [start, end] (end None: no upper bound); the count written."""
    oldest: list[float] = []
    lines = (_stream_lines(file, diag, oldest) if file is not None
             else _directory_lines(logdir or Path("."), start, end, diag, oldest))
    clock = Clock()
    warned = False
    written = 0
    write = out.write
    unix = clock.unix
    display = clock.display
    local_text = clock.local_text
    stop = float("inf") if end is None else end
    for s in lines:
        if not warned:
            warned = True
            _warn_if_older(start, oldest, clock, err)
        if s.kind == "tai64n":
            # The hot path (multilog's own stamps), inlined: a large log has tens of millions.
            stamp = s.stamp
            sec = int(stamp[:16], 16) - TAI64_UNIX_OFFSET
            nano = int(stamp[16:], 16)
            t = sec + nano / 1e9
            if start <= t <= stop:
                write(f"{local_text(sec)}.{nano // 1000:06d} {s.text}\n")
                written += 1
            continue
        try:
            t = unix(s)
        except ValueError:
            diag.problem("unreadable", "")
            continue
        if start <= t <= stop:
            write(f"{display(s)} {s.text}\n")
            written += 1
    if not warned:
        if oldest:
            _warn_if_older(start, oldest, clock, err)
        else:
            print("Warning: We have no send log lines at all.", file=err)
    return written


def _warn_if_older(start: float, oldest: list[float], clock: Clock, err: TextIO) -> None:
    if oldest and start < oldest[0]:
        when = clock.local_text(int(oldest[0]))
        print(f"Warning: We only have logs dating back to {when}.", file=err)


def now() -> float:
    """The current time; one place so a test can see which clock the selectors use."""
    return time.time()
