"""Slots cannot be held for ever (issue 16, item 8): a total session lifetime, and a minimum
data rate while a message arrives; both answer 421 so the client comes back, nothing is lost."""

from __future__ import annotations

import time

from smtp_helpers import JOE, RawClient, change, queue_entries

from mailyard.home import Home
from mailyard.settings.registry import defaults
from mailyard.smtp import policy as P


def policy(**values: object) -> P.Policy:
    return P.Policy.from_settings(defaults() | values, "smtp")


def test_the_read_timeout_never_passes_the_lifetime() -> None:
    p = policy(**{"smtp.timeout": 1200, "smtp.session_lifetime": 3600})
    assert P.read_timeout(p, 0) == 1200
    assert P.read_timeout(p, 3000) == 600
    assert P.read_timeout(p, 3600) <= 0


def test_the_data_rate_is_judged_after_the_grace_only() -> None:
    p = policy(**{"smtp.min_data_rate": 500})
    assert P.data_too_slow(p, P.DATA_RATE_GRACE, 0) is None  # a pause after 354 is fine
    assert P.data_too_slow(p, 60, 30_000) is None  # exactly 500 bytes/s
    slow = P.data_too_slow(p, 60, 29_999)
    assert slow is not None and (slow.code, slow.status) == (421, "4.4.2")
    assert P.data_too_slow(policy(**{"smtp.min_data_rate": 0}), 600, 0) is None


def test_a_busy_session_ends_at_its_lifetime(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.session_lifetime": 10})
    svc = start("smtp")
    c = RawClient(node.port("smtp"), timeout=60)
    assert c.code() == 220
    began = time.monotonic()
    reply = b""
    while time.monotonic() - began < 40:  # never idle: a NOOP every second
        c.send(b"NOOP\r\n")
        reply = c.reply()
        if not reply.startswith(b"250"):
            break
        time.sleep(1)
    assert reply.startswith(b"421 4.4.2") and b"lasted too long" in reply, reply
    assert c.closed()
    svc.wait_log("too-long ip=127.0.0.1 lifetime=10s")


def test_a_message_trickled_below_the_minimum_rate_is_refused(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.min_data_rate": 10_000})
    svc = start("smtp")
    c = RawClient(node.port("smtp"), timeout=60)
    assert c.code() == 220
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<" + JOE.encode() +
           b">\r\nDATA\r\n")
    assert [c.code() for _ in range(4)] == [250, 250, 250, 354]
    c.send(b"Subject: slow\r\n\r\n")
    began = time.monotonic()
    reply = b""
    while time.monotonic() - began < P.DATA_RATE_GRACE + 20:
        try:
            c.send(b"x" * 50 + b"\r\n")  # about 50 bytes a second
        except OSError:
            break
        c.sock.settimeout(1.0)
        try:
            reply = c.reply()
            break
        except TimeoutError:
            continue
    assert reply.startswith(b"421 4.4.2") and b"too slowly" in reply, reply
    assert queue_entries(node) == []
    svc.wait_log("rule=DATA_TOO_SLOW")
