"""The bounce decision as plain functions: the lifetime's end, and where failure reports go."""

from __future__ import annotations

from typing import Any

import pytest

from mailyard.delivery.bounce import (
    DOUBLE_BOUNCE_HEADER,
    DOUBLE_BOUNCE_SENDER,
    BounceDecision,
    BounceKind,
    decide_bounce,
    settle,
)
from mailyard.delivery.result import Result, deferral, failure, success
from mailyard.delivery.retry import LIFETIME_TEXT
from mailyard.settings.registry import defaults

BIRTH = 1_000_000.0
LIFETIME = 7 * 86400.0
END = BIRTH + LIFETIME  # the first moment an attempt's deferral is final


# ---- settle: the result recorded for an attempt -----------------------------------------------


@pytest.mark.parametrize("result", [
    success("did 1+0+0"),
    failure("Sorry, no mailbox here by that name. (#5.1.1)", status="5.1.1"),
    deferral("Connection refused. (#4.4.1)", remote_mta="mx.far.test"),
])
@pytest.mark.parametrize("started", [BIRTH, END - 1, END - 0.001])
def test_a_result_within_the_lifetime_is_kept(result: Result, started: float) -> None:
    assert settle(result, BIRTH, started, LIFETIME) is result


@pytest.mark.parametrize("result", [
    success("did 1+0+0"),
    failure("Sorry, no mailbox here by that name. (#5.1.1)", status="5.1.1"),
])
@pytest.mark.parametrize("started", [END, END + 1, END + LIFETIME])
def test_a_success_or_failure_past_the_lifetime_is_kept(result: Result, started: float) -> None:
    assert settle(result, BIRTH, started, LIFETIME) is result


@pytest.mark.parametrize(("result", "status"), [
    (deferral("Connection refused. (#4.4.1)"), "4.4.7"),
    (deferral("451 greylisted", diagnostic="451 4.7.1 try later"), "4.4.7"),
    (deferral("no code at all"), "4.4.7"),  # 4.0.0 found, so 4.4.7
    (deferral("Mailbox busy. (#4.2.1)", status="4.2.1"), "4.4.7"),
    (deferral("odd: a deferral with a permanent code", status="5.7.1"), "5.7.1"),
])
@pytest.mark.parametrize("started", [END, END + 1, END + LIFETIME])
def test_a_deferral_from_the_end_of_the_lifetime_on_is_a_failure(
        result: Result, status: str, started: float) -> None:
    settled = settle(result, BIRTH, started, LIFETIME)
    assert settled == Result("failure", f"{result.text}\n{LIFETIME_TEXT}", status=status,
                             remote_mta=result.remote_mta, diagnostic=result.diagnostic)


def test_a_settled_deferral_keeps_the_remote_host_and_its_reply_and_one_line_break() -> None:
    result = deferral("Connected to 192.0.2.1 but the server said:\n452 full\n",
                      remote_mta="mx.far.test", diagnostic="452 4.2.2 mailbox full")
    settled = settle(result, BIRTH, END, LIFETIME)
    assert settled.kind == "failure"
    assert settled.text == \
        f"Connected to 192.0.2.1 but the server said:\n452 full\n{LIFETIME_TEXT}"
    assert (settled.status, settled.remote_mta, settled.diagnostic) == \
        ("4.4.7", "mx.far.test", "452 4.2.2 mailbox full")
    assert settled.enhanced_status() == "4.4.7"


# ---- decide_bounce: where the failure reports go ------------------------------------------------


def _settings(changed: dict[str, Any]) -> dict[str, Any]:
    return {**defaults(), "server.hostname": "mx.example.test", **changed}


PLAIN = b"From: someone\nSubject: hello\n\nbody\n"
RETURNED = f"From: MAILER-DAEMON\n{DOUBLE_BOUNCE_HEADER}: mx.other.test\n\nbody\n".encode()
HEADER_IN_BODY = f"From: MAILER-DAEMON\nSubject: x\n\n{DOUBLE_BOUNCE_HEADER}: y\n".encode()
# the header, spelt otherwise and after a CRLF line, is still the header
RETURNED_CRLF = f"Subject: x\r\n{DOUBLE_BOUNCE_HEADER.upper()}: mx.other.test\r\n\r\n".encode()


@pytest.mark.parametrize(("sender", "original", "changed", "expected"), [
    # a message from a sender: its bounce goes back to it, from <>
    ("joe@example.test", PLAIN, {}, BounceDecision(BounceKind.BOUNCE, "joe@example.test", "")),
    ("joe@example.test", PLAIN, {"bounce.double_enabled": False},
     BounceDecision(BounceKind.BOUNCE, "joe@example.test", "")),
    ("joe@example.test", RETURNED, {},  # the header counts only on a message from <>
     BounceDecision(BounceKind.BOUNCE, "joe@example.test", "")),
    # a bounce (from <>): a double bounce to the postmaster, from #@[]
    ("", PLAIN, {}, BounceDecision(BounceKind.DOUBLE, "postmaster@mx.example.test",
                                   DOUBLE_BOUNCE_SENDER)),
    ("", PLAIN, {"bounce.double_to": "bounces", "bounce.double_host": "example.test"},
     BounceDecision(BounceKind.DOUBLE, "bounces@example.test", DOUBLE_BOUNCE_SENDER)),
    ("", HEADER_IN_BODY, {}, BounceDecision(BounceKind.DOUBLE, "postmaster@mx.example.test",
                                            DOUBLE_BOUNCE_SENDER)),
    # ... or nothing, with double bounces turned off
    ("", PLAIN, {"bounce.double_enabled": False}, BounceDecision(BounceKind.DOUBLE_DISCARDED)),
    # a double bounce (ours from #@[], or one come back from <>): discarded, whatever is set
    (DOUBLE_BOUNCE_SENDER, PLAIN, {}, BounceDecision(BounceKind.TRIPLE_DISCARDED)),
    (DOUBLE_BOUNCE_SENDER, PLAIN, {"bounce.double_enabled": False},
     BounceDecision(BounceKind.TRIPLE_DISCARDED)),
    ("", RETURNED, {}, BounceDecision(BounceKind.TRIPLE_DISCARDED)),
    ("", RETURNED, {"bounce.double_enabled": False}, BounceDecision(BounceKind.TRIPLE_DISCARDED)),
    ("", RETURNED_CRLF, {}, BounceDecision(BounceKind.TRIPLE_DISCARDED)),
])
def test_where_the_failure_reports_of_a_message_go(sender: str, original: bytes,
                                                   changed: dict[str, Any],
                                                   expected: BounceDecision) -> None:
    decision = decide_bounce(sender, original, _settings(changed))
    assert decision == expected
    assert decision.sends == (expected.kind in (BounceKind.BOUNCE, BounceKind.DOUBLE))
