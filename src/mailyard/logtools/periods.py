"""The time grammar of the selectors: periods ("3 hours"), fuzzy dates and START/END values.

A period is ONE count and ONE unit, from seconds to weeks, singular or plural, optionally
followed by "ago".  Mixed periods ("3 days 12 hours") are refused on purpose, as in the guide
the tools come from: the refusal tells the administrator the total in the smaller unit, so
the fix is a copy and paste away.
"""

from __future__ import annotations

import re
import time

from mailyard.logtools.tai64n import parse_display


class PeriodError(ValueError):
    """A period or time value that the grammar does not accept; the text says why."""


# Each unit's spellings and its length in seconds.  No "m": it could mean minutes or months.
UNITS: dict[str, tuple[str, int]] = {}
for _name, _secs, _spellings in (
    ("second", 1, ("s", "sec", "secs", "second", "seconds")),
    ("minute", 60, ("min", "mins", "minute", "minutes")),
    ("hour", 3600, ("h", "hr", "hrs", "hour", "hours")),
    ("day", 86400, ("d", "day", "days")),
    ("week", 604800, ("w", "wk", "wks", "week", "weeks")),
):
    for _sp in _spellings:
        UNITS[_sp] = (_name, _secs)

# Units people try that we do not take, with the reason given back to them.
REFUSED_UNITS = {
    "month": "months differ in length",
    "months": "months differ in length",
    "year": "years differ in length",
    "years": "years differ in length",
}

GRAMMAR = ("a period is a whole number and one unit (seconds, minutes, hours, days or weeks), "
           "optionally followed by 'ago', e.g. '3 hours' or '6 days ago'")

_PART_RE = re.compile(r"(\d+|an?|one)\s*([a-z]+)")


def _count(word: str) -> int:
    return 1 if word in ("a", "an", "one") else int(word)


def parse_period(text: str) -> int:
    """Seconds in a period such as "3 hours", "1 week ago", "90 minutes"."""
    words = text.strip().lower().replace(",", " ").split()
    if words and words[-1] == "ago":
        words = words[:-1]
    body = " ".join(w for w in words if w != "and")
    if not body:
        raise PeriodError(f"empty period: {GRAMMAR}")
    parts = _PART_RE.findall(body)
    rebuilt = " ".join(f"{n} {u}" for n, u in parts)
    if not parts or _PART_RE.sub("", body).strip():
        if re.search(r"\d+[.,]\d", text):
            raise PeriodError(f"{text!r}: the count must be a whole number; {GRAMMAR}")
        raise PeriodError(f"{text!r} is not a period: {GRAMMAR}")
    for _n, unit in parts:
        if unit in REFUSED_UNITS:
            raise PeriodError(f"{text!r}: {unit} are not accepted because "
                              f"{REFUSED_UNITS[unit]}; give days or weeks instead")
        if unit not in UNITS:
            raise PeriodError(f"{text!r}: unknown unit {unit!r}; {GRAMMAR}")
    if len(parts) > 1:
        smallest = min((UNITS[u] for _n, u in parts), key=lambda nu: nu[1])
        total = sum(_count(n) * UNITS[u][1] for n, u in parts) // smallest[1]
        raise PeriodError(
            f"{text!r} mixes {len(parts)} periods ({rebuilt}); a period is one count and one "
            f"unit, so give the total in the smallest unit: '{total} {smallest[0]}s'")
    n, unit = parts[0]
    return _count(n) * UNITS[unit][1]


def hstamp(text: str, now: float | None = None) -> int:
    """Epoch seconds of a fuzzy date: "now" or a period back from now ("5 hours ago")."""
    now = time.time() if now is None else now
    if text.strip().lower() == "now":
        return int(now)
    return int(now) - parse_period(text)


_DATE_RE = re.compile(r"\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?$")


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds of a START/END argument.

    Accepted: epoch seconds (what `hstamp` and `date +%s` print, optionally with a fraction or
    a leading @), a local date `YYYY-MM-DD[ HH:MM[:SS]]`, or a fuzzy date as `hstamp` takes it.
    """
    value = text.strip()
    if re.fullmatch(r"@?\d+(\.\d+)?", value):
        return float(value.lstrip("@"))
    if _DATE_RE.match(value):
        value = value.replace("T", " ")
        if len(value) == 10:
            value += " 00:00:00"
        elif len(value) == 16:
            value += ":00"
        try:
            return parse_display(value)
        except ValueError as exc:
            raise PeriodError(f"{text!r} is not a valid date") from exc
    try:
        return float(hstamp(value, now))
    except PeriodError as exc:
        raise PeriodError(
            f"{text!r} is not a time: give epoch seconds (from hstamp or `date +%s`), a local "
            f"date 'YYYY-MM-DD HH:MM', or a fuzzy date like '5 hours ago' ({exc})") from exc
