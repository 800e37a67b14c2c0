"""The selectors' time grammar: one count, one unit, optional "ago"; mixed periods refused."""

from __future__ import annotations

import pytest

from mailyard.logtools.periods import PeriodError, hstamp, parse_period, parse_time


@pytest.mark.parametrize(("text", "seconds"), [
    ("1 second", 1), ("45 seconds", 45), ("5 minutes", 300), ("1 minute", 60),
    ("3 hours", 3 * 3600), ("1 hour", 3600), ("6 days", 6 * 86400), ("1 day", 86400),
    ("1 week", 604800), ("2 weeks", 2 * 604800), ("6 days ago", 6 * 86400),
    ("12 hours ago", 12 * 3600), ("  3   HOURS  ", 3 * 3600), ("5044 minutes", 5044 * 60),
    ("an hour ago", 3600), ("a week", 604800), ("90min", 5400), ("2 hrs", 7200),
])
def test_a_period_is_one_count_and_one_unit(text: str, seconds: int) -> None:
    assert parse_period(text) == seconds


def test_the_guides_mixed_period_is_refused_with_the_total_in_minutes() -> None:
    with pytest.raises(PeriodError) as exc:
        parse_period("3 days 12 hours 4 minutes")
    message = str(exc.value)
    assert "mixes 3 periods" in message
    assert "'5044 minutes'" in message


def test_a_mixed_period_suggests_the_smaller_unit_of_the_two() -> None:
    with pytest.raises(PeriodError, match="'84 hours'"):
        parse_period("3 days 12 hours ago")
    with pytest.raises(PeriodError, match="'84 hours'"):
        parse_period("3 days and 12 hours")


@pytest.mark.parametrize(("text", "why"), [
    ("2 months", "months differ in length"),
    ("1 year ago", "years differ in length"),
    ("1.5 hours", "whole number"),
    ("3 fortnights", "unknown unit 'fortnights'"),
    ("hours", "not a period"),
    ("", "empty period"),
    ("ago", "empty period"),
    ("yesterday", "not a period"),
    ("3", "not a period"),
])
def test_periods_outside_the_grammar_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(PeriodError, match=why):
        parse_period(text)


def test_hstamp_counts_back_from_now() -> None:
    now = 1_700_000_000.7
    assert hstamp("5 hours ago", now) == 1_700_000_000 - 5 * 3600
    assert hstamp("3 seconds ago", now) == 1_700_000_000 - 3
    assert hstamp("now", now) == 1_700_000_000


def test_start_and_end_accept_epoch_seconds_dates_and_fuzzy_dates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert parse_time("1320438841") == 1320438841.0
        assert parse_time("@1320438841") == 1320438841.0
        assert parse_time("1320438841.25") == 1320438841.25
        assert parse_time("2011-11-04 20:13") == 1320437580.0
        assert parse_time("2011-11-04") == 1320364800.0
        assert parse_time("2011-11-04T20:13:05") == 1320437585.0
        assert parse_time("1 hour ago", now=1320437580.0) == 1320437580.0 - 3600
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("text", ["tomorrow", "2011-13-45 10:00", "3 days 2 hours"])
def test_bad_start_or_end_says_what_is_accepted(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_time(text)
