"""Time stamps at the start of a send-log line: recognise, convert and print them.

Three stamp forms are accepted, because an administrator may hand us a log in any of them:

* ``@4000000062a1b2c30d1e2f30`` -- TAI64N as written by multilog (24 hex digits);
* ``2011-11-08 02:13:44.123456500`` -- the same after ``tai64nlocal``, local time (also the
  form our own selectors write, with 6 fraction digits);
* ``1320717224.123456`` -- unix seconds, as written by ``accustamp`` and similar tools.

Conversions ignore leap seconds, as ``tai64nlocal`` does.
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

# The codec itself is the node's own (mailyard.logs), so the stamps we write and the stamps
# we read can never disagree.
from ..logs import TAI64_UNIX_OFFSET
from ..logs import parse_tai64n as tai64n_to_unix
from ..logs import tai64n_label as unix_to_tai64n

__all__ = ["TAI64_UNIX_OFFSET", "Clock", "Stamped", "parse_display", "split_stamp", "tai64n_to_unix",
           "unix_to_tai64n"]

# How our tools print a time: local time, microseconds, sortable, and parseable back by the
# next tool in a pipe (and by `date -d`).  26 characters.
DISPLAY_FORMAT = "%Y-%m-%d %H:%M:%S"

_LOCAL_RE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? ")
_UNIX_RE = re.compile(r"(\d{9,11})(?:\.(\d{1,9}))? ")
_HEX = frozenset("0123456789abcdefABCDEF")


class Stamped(NamedTuple):
    """One log line split into its stamp and the message text after it."""

    kind: str  # "tai64n", "local" or "unix"
    stamp: str  # the stamp as written, without the trailing space
    text: str  # the qmail-send message, without the line end


def split_stamp(line: str) -> Stamped | None:
    """Split `line` into stamp and message text; None if the line does not start with a stamp."""
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]  # a CR LF line end (a log that went through a Windows editor or FTP)
    if not line:
        return None
    first = line[0]
    if first == "@":
        if len(line) >= 26 and line[25] == " " and _HEX.issuperset(line[1:25]):
            return Stamped("tai64n", line[1:25], line[26:])
        return None
    if not first.isdigit():
        return None
    m = _LOCAL_RE.match(line)
    if m:
        return Stamped("local", line[: m.end() - 1], line[m.end():])
    m = _UNIX_RE.match(line)
    if m:
        return Stamped("unix", line[: m.end() - 1], line[m.end():])
    return None


class Clock:
    """Converts stamps to unix time and to display text, caching per second.

    A busy log has many lines per second; formatting local time costs microseconds, so the
    last converted second is remembered (the log is nearly sorted, so that hits almost always).
    """

    def __init__(self) -> None:
        self._sec: int | None = None
        self._sec_text = ""
        self._minute_key = ""
        self._minute_unix = 0

    def local_text(self, unix_sec: int) -> str:
        """`YYYY-MM-DD HH:MM:SS` in local time for whole unix second `unix_sec`."""
        if unix_sec != self._sec:
            self._sec = unix_sec
            self._sec_text = time.strftime(DISPLAY_FORMAT, time.localtime(unix_sec))
        return self._sec_text

    def display(self, s: Stamped) -> str:
        """The stamp as our tools print it: local time with 6 fraction digits."""
        if s.kind == "local":
            head, _, frac = s.stamp.partition(".")
            return f"{head}.{frac[:6].ljust(6, '0')}"
        if s.kind == "tai64n":
            sec = int(s.stamp[:16], 16) - TAI64_UNIX_OFFSET
            micro = int(s.stamp[16:24], 16) // 1000
        else:
            whole, _, frac = s.stamp.partition(".")
            sec = int(whole)
            micro = int(frac[:6].ljust(6, "0")) if frac else 0
        return f"{self.local_text(sec)}.{micro:06d}"

    def unix(self, s: Stamped) -> float:
        """Unix time of a stamp; local-time stamps are read in the current time zone.

        An hour that occurs twice when daylight saving ends is read as its first occurrence
        (mktime's choice); that is the one ambiguity of local-time logs.
        """
        if s.kind == "tai64n":
            return tai64n_to_unix(s.stamp)
        if s.kind == "unix":
            return float(s.stamp)
        head, _, frac = s.stamp.partition(".")
        key = head[:16]  # YYYY-MM-DD HH:MM
        if key != self._minute_key:
            tm = time.strptime(key, "%Y-%m-%d %H:%M")
            self._minute_unix = int(time.mktime(tm))
            self._minute_key = key
        return self._minute_unix + int(head[17:19]) + (float("0." + frac) if frac else 0.0)


def parse_display(text: str) -> float:
    """Unix time of a `YYYY-MM-DD HH:MM:SS[.ffffff]` local time (used by tests and hstamp)."""
    s = split_stamp(text + " x")
    if s is None or s.kind != "local":
        raise ValueError(f"not a local time stamp: {text!r}")
    return Clock().unix(s)
