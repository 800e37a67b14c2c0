"""Where log lines come from: a multilog directory read in time order, a file, or stdin.

Every source yields `Stamped` lines; a line without a readable stamp, or the last line of a
file when it has no line end (a file cut short while being written), is counted in the
`Diagnostics` and skipped.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mailyard.logtools.tai64n import Stamped, split_stamp, tai64n_to_unix
from mailyard.logtools.tracking import Diagnostics

# multilog names a finished file @<tai64n>.s, or .u when it was cut short by a crash.
_ROTATED_RE = re.compile(r"@([0-9a-fA-F]{24})\.[su]$")


class SourceError(RuntimeError):
    """A log source that cannot be read; the text names it and says what to give instead."""


@dataclass(frozen=True)
class LogFile:
    path: Path
    rotated_at: float | None  # unix time in the name of a rotated file; None for `current`


def log_files(logdir: Path) -> list[LogFile]:
    """The files of a multilog directory, oldest first: every `@….s`/`@….u`, then `current`.

    A rotated file's name is the time it was closed, so sorting names sorts the files in time.
    """
    if not logdir.is_dir():
        raise SourceError(f"no log directory at {logdir}")
    rotated: list[LogFile] = []
    for entry in os.scandir(logdir):
        m = _ROTATED_RE.match(entry.name)
        if m and entry.is_file():
            rotated.append(LogFile(Path(entry.path), tai64n_to_unix(m[1])))
    rotated.sort(key=lambda f: f.path.name.lower())
    current = logdir / "current"
    if current.is_file():
        rotated.append(LogFile(current, None))
    return rotated


def open_text(path: Path) -> TextIO:
    """A log file opened for reading lines as qmail wrote them (bytes kept as they are)."""
    return open(path, encoding="utf-8", errors="surrogateescape", newline="\n")  # noqa: SIM115


def stdin_text() -> TextIO:
    sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape", newline="\n")  # type: ignore[union-attr]
    return sys.stdin


def stamped_lines(stream: Iterable[str], name: str, diag: Diagnostics,
                  number: int = 0) -> Iterator[Stamped]:
    """The stamped lines of one stream; bad lines are counted in `diag` and skipped.

    `number` is the count of lines of the same input before `stream` (for the messages).
    """
    split = split_stamp
    for line in stream:
        number += 1
        if line[-1:] != "\n":
            # Only the last line of a stream can lack its line end: cut short while written.
            diag.problem("truncated", f"{name} line {number}")
            return
        s = split(line)
        if s is None:
            diag.problem("unreadable", f"{name} line {number}")
        else:
            yield s


def first_stamp(path: Path, limit: int = 1000) -> Stamped | None:
    """The first readable stamp among the first `limit` lines of a file (None if none)."""
    try:
        with open_text(path) as f:
            for i, line in enumerate(f):
                if i >= limit:
                    break
                if line.endswith("\n"):
                    s = split_stamp(line)
                    if s is not None:
                        return s
    except OSError:
        return None
    return None


def input_lines(file: str | None, diag: Diagnostics) -> Iterator[Stamped]:
    """The lines an operator or filter reads: `-f FILE`, `-f -` or (default) stdin."""
    if file is None or file == "-":
        yield from stamped_lines(stdin_text(), "<stdin>", diag)
        return
    path = Path(file)
    try:
        f = open_text(path)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
    with f:
        yield from stamped_lines(f, str(path), diag)
