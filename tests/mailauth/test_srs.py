"""SRS addresses (mailauth.srs): made, reversed, refused when forged or old, case-blind."""

from __future__ import annotations

import pytest

from mailyard.mailauth.srs import MAX_AGE_DAYS, SrsError, forward_address, reverse

KEY = b"k" * 32
NOW = 1_796_000_000.0


def test_a_forwarded_sender_comes_back_whatever_its_case() -> None:
    made = forward_address("Alice@Remote.test", "mx.example.test", KEY, now=NOW)
    assert made.startswith("SRS0=") and made.endswith("@mx.example.test")
    assert reverse(made, KEY, now=NOW).lower() == "alice@remote.test"
    assert reverse(made.lower(), KEY, now=NOW).lower() == "alice@remote.test"
    assert reverse(made.upper(), KEY, now=NOW).lower() == "alice@remote.test"


def test_null_and_own_senders_stay() -> None:
    assert forward_address("", "mx.example.test", KEY) == ""
    assert forward_address("me@mx.example.test", "mx.example.test", KEY) == "me@mx.example.test"


def test_forged_old_and_malformed_addresses_are_refused() -> None:
    made = forward_address("alice@remote.test", "mx.example.test", KEY, now=NOW)
    with pytest.raises(SrsError, match="hash"):
        reverse(made, b"another key" * 3, now=NOW)
    with pytest.raises(SrsError, match="days old"):
        reverse(made, KEY, now=NOW + (MAX_AGE_DAYS + 1) * 86400)
    assert reverse(made, KEY, now=NOW + MAX_AGE_DAYS * 86400)
    for bad in ("SRS0=x@mx.example.test", "alice@remote.test", "SRS0==AB=d=l@h",
                made.replace("=remote.test=", "=evil.test=")):
        with pytest.raises(SrsError):
            reverse(bad, KEY, now=NOW)
