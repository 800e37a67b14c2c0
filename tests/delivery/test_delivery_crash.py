"""Crash safety: SIGKILL the send service (and the injector) at random moments, many times;
every committed message still reaches every recipient, whole."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from send_harness import (
    SendService,
    SmtpSink,
    queue_empty,
    queue_listing,
    wait_until,
)

from mailyard.home import Home
from mailyard.store import accounts
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import set_setting

HERE = Path(__file__).resolve().parent
MESSAGES = 200
SERVICE_KILLS = 10
INJECTOR_KILLS = 3
LOCAL = [f"u{n}@example.test" for n in range(4)]
REMOTE = ["r1@far.test", "r2@far.test"]


def _check_body(message: bytes) -> str:
    """The token of a delivered message, after checking its body against its digest."""
    head, _, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\n") if b": " in line)
    assert hashlib.sha256(body).hexdigest().encode() == fields[b"X-Body-SHA256"], "corrupted"
    return fields[b"X-Token"].decode()


def _injector(home: Home, seed: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE / "crash_injector.py"),
                             str(home.queue_dir), str(seed), str(count), *LOCAL, *REMOTE],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_sigkill_at_random_moments_loses_nothing(mail_home: Home, send_service: SendService,
                                                 sink: SmtpSink) -> None:
    for address in LOCAL:
        accounts.add_mailbox(mail_home, address, "secret-load-1")
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    dispose_all()
    rng = random.Random(4)
    committed: dict[str, set[str]] = {}
    seed = 0
    remaining = MESSAGES
    injector_kills = 0
    service_kills = 0
    send_service.start()
    while remaining > 0 or service_kills < SERVICE_KILLS:
        if remaining > 0:
            seed += 1
            batch = min(remaining, MESSAGES // (INJECTOR_KILLS + 1) + 1)
            proc = _injector(mail_home, seed, batch)
            if injector_kills < INJECTOR_KILLS:
                time.sleep(rng.uniform(0.05, 0.4))
                proc.send_signal(signal.SIGKILL)
                injector_kills += 1
            out, _ = proc.communicate(timeout=120)
            for line in out.splitlines():
                if line.startswith("OK "):
                    _, token, _, rcpts = line.split(" ")
                    committed[token] = set(rcpts.split(","))
            remaining = MESSAGES - len(committed)
        if service_kills < SERVICE_KILLS:
            time.sleep(rng.uniform(0.0, 0.3))
            send_service.kill()
            service_kills += 1
            send_service.start()
    # mess/ may keep the data of an inject killed between its two renames: it is removed by
    # the hourly clean-up (an hour old), never delivered; everything else must be gone.
    busy = ("todo", "info", "local", "remote", "bounce")
    try:
        wait_until(lambda: queue_empty(mail_home, busy), timeout=180, what="the queue to empty")
    except AssertionError:
        raise AssertionError(f"queue not empty: {queue_listing(mail_home)}\n"
                             + "\n".join(send_service.log_lines()[-40:])) from None
    send_service.stop()

    received: Counter[tuple[str, str]] = Counter()
    for address in LOCAL:
        for path in (mail_home.maildir(address) / "new").iterdir():
            data = path.read_bytes()
            assert data.startswith(b"Return-Path: <load@remote.test>\n"
                                   b"Delivered-To: " + address.encode() + b"\n")
            received[(_check_body(data.split(b"\n", 2)[2]), address)] += 1
    for msg in sink.messages:
        for rcpt in msg.recipients:
            received[(_check_body(msg.data), rcpt)] += 1
    expected = {(token, rcpt) for token, rcpts in committed.items() for rcpt in rcpts}
    missing = expected - set(received)
    assert not missing, f"{len(missing)} deliveries lost, e.g. {sorted(missing)[:5]}"
    unexpected = {key for key in received if key[0] in committed and key not in expected}
    assert not unexpected, f"delivered to recipients never given: {sorted(unexpected)[:5]}"
    # A message committed by an injector killed before it could print OK may arrive too.
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    # qmail's guarantee: a delivery can repeat only when a crash falls between the delivery
    # and its done mark, so at most the deliveries in flight at each kill.
    assert duplicates <= SERVICE_KILLS * 2, f"{duplicates} duplicate deliveries"
    assert len(committed) >= MESSAGES
    assert not list((mail_home.queue_dir / "todo").iterdir())
