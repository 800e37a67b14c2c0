"""Filtering decisions and size limits, as plain functions: no daemon involved."""

from __future__ import annotations

import pytest

from mailyard.filters.limits import (
    CLAMD_MAX_BYTES,
    MB,
    max_file_bytes,
    max_scan_bytes,
    stream_max_bytes,
)
from mailyard.filters.policy import (
    file_message,
    spam_reply,
    virus_reply,
    virus_too_big_reply,
    virus_unavailable_reply,
)


def test_spam_above_the_smtp_threshold_is_refused_with_a_5xx_naming_the_score() -> None:
    reply = spam_reply(10.5, 10.0)
    assert reply is not None
    assert (reply.code, reply.status, reply.text) == (
        550, "5.7.1", "message refused: judged to be spam (score 10.5)")


@pytest.mark.parametrize("score", [-3.0, 0.0, 9.9, 10.0])
def test_spam_at_or_below_the_smtp_threshold_is_accepted(score: float) -> None:
    assert spam_reply(score, 10.0) is None


def test_virus_reply_names_the_signature() -> None:
    reply = virus_reply("Win.Test.EICAR_HDB-1")
    assert (reply.code, reply.status, reply.text) == (
        554, "5.7.1", "message refused: virus Win.Test.EICAR_HDB-1 found")


def test_virus_reply_keeps_control_characters_and_spaces_out_of_the_reply_line() -> None:
    reply = virus_reply("Bad\r\nName 250 ok")
    code, status, text = reply.code, reply.status, reply.text
    assert (code, status) == (554, "5.7.1")
    assert "\r" not in text and "\n" not in text
    assert text == "message refused: virus BadName250ok found"


def test_scanner_trouble_is_temporary_and_too_big_is_permanent() -> None:
    assert virus_unavailable_reply().code // 100 == 4
    assert virus_unavailable_reply().status.startswith("4.")
    assert (virus_too_big_reply().code, virus_too_big_reply().status) == (552, "5.3.4")


@pytest.mark.parametrize(("is_spam", "action", "folder", "discard"), [
    (False, "spam_folder", "INBOX", False),
    (False, "discard", "INBOX", False),
    (True, "spam_folder", "Spam", False),
    (True, "inbox", "INBOX", False),
    (True, "discard", "INBOX", True),
    (True, "something-unknown", "Spam", False),
])
def test_filing_follows_the_verdict_and_the_mailbox_choice(
        is_spam: bool, action: str, folder: str, discard: bool) -> None:
    filing = file_message(is_spam, action)
    assert (filing.folder, filing.discard) == (folder, discard)


def test_clamd_stream_limit_is_the_message_size_plus_a_margin() -> None:
    settings = {"smtp.message_size_mb": 20}
    assert stream_max_bytes(settings) == 21 * MB
    assert max_file_bytes(settings) >= stream_max_bytes(settings)
    assert max_scan_bytes(settings) >= stream_max_bytes(settings)


def test_unlimited_message_size_gives_clamd_its_largest_scannable_stream() -> None:
    settings = {"smtp.message_size_mb": 0}
    assert stream_max_bytes(settings) == CLAMD_MAX_BYTES
    assert max_file_bytes(settings) == CLAMD_MAX_BYTES
    assert max_scan_bytes(settings) <= 4095 * MB  # clamd's ceiling for any size option


@pytest.mark.parametrize("size_mb", [1, 20, 100, 2046, 2048])
def test_file_and_scan_limits_never_fall_below_the_stream_limit(size_mb: int) -> None:
    settings = {"smtp.message_size_mb": size_mb}
    assert max_file_bytes(settings) >= stream_max_bytes(settings)
    assert max_scan_bytes(settings) >= stream_max_bytes(settings)
    assert stream_max_bytes(settings) <= CLAMD_MAX_BYTES
