"""Crash safety: SIGKILL the send service (and the injector) at random moments, many times;
every committed message still reaches every recipient, whole."""

from __future__ import annotations

import hashlib
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from crash_injector import make_message
from send_harness import (
    SendService,
    SmtpService,
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
# Small enough to make the bound on repeated deliveries below a tight one.
LOCAL_CONCURRENCY = 4
REMOTE_CONCURRENCY = 4


def _check_body(message: bytes) -> str:
    """The token of a delivered message, after checking its body against its digest."""
    head, _, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\n") if b": " in line)
    assert hashlib.sha256(body).hexdigest().encode() == fields[b"X-Body-SHA256"], "corrupted"
    return fields[b"X-Token"].decode()


def _wait_for_empty_queue(home: Home, service: SendService) -> None:
    # mess/ may keep the data of an inject killed between its two renames: it is removed by
    # the hourly clean-up (an hour old), never delivered; everything else must be gone.
    busy = ("todo", "info", "local", "remote", "bounce")
    try:
        wait_until(lambda: queue_empty(home, busy), timeout=180, what="the queue to empty")
    except AssertionError:
        raise AssertionError(f"queue not empty: {queue_listing(home)}\n"
                             + "\n".join(service.log_lines()[-40:])) from None


def _check_deliveries(home: Home, sink: SmtpSink, committed: dict[str, set[str]],
                      kills: int) -> None:
    """Every committed message reached each of its recipients whole, and only them."""
    received: Counter[tuple[str, str]] = Counter()
    for address in LOCAL:
        for path in (home.maildir(address) / "new").iterdir():
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
    # qmail's guarantee: a delivery can repeat only when a crash falls between the delivery
    # and its done mark, so at most the deliveries in flight at each kill. (A message whose
    # sender never learnt it was committed may arrive too; it is not counted here.)
    duplicates = sum(n - 1 for key, n in received.items() if n > 1 and key[0] in committed)
    in_flight = LOCAL_CONCURRENCY + REMOTE_CONCURRENCY
    print(f"{len(expected)} deliveries expected, {duplicates} repeated after {kills} kills")
    assert duplicates <= kills * in_flight, f"{duplicates} duplicate deliveries"


def _injector(home: Home, seed: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE / "crash_injector.py"),
                             str(home.queue_dir), str(seed), str(count), *LOCAL, *REMOTE],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_sigkill_at_random_moments_loses_nothing(mail_home: Home, send_service: SendService,
                                                 sink: SmtpSink) -> None:
    for address in LOCAL:
        accounts.add_mailbox(mail_home, address, "secret-load-1")
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    # Not what is tested here; with spamd absent each scan still costs a failed connection.
    set_setting(mail_home, "spam.mailbox_scanning", False)
    set_setting(mail_home, "send.local_concurrency", LOCAL_CONCURRENCY)
    set_setting(mail_home, "send.max_connections", REMOTE_CONCURRENCY)
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
    _wait_for_empty_queue(mail_home, send_service)
    send_service.stop()
    _check_deliveries(mail_home, sink, committed, kills=SERVICE_KILLS)
    assert len(committed) >= MESSAGES
    assert not list((mail_home.queue_dir / "todo").iterdir())


SMTP_MESSAGES = 120
SMTP_KILLS = 8


def test_sigkill_of_smtp_and_send_loses_no_accepted_message(
        mail_home: Home, send_service: SendService, smtp_service: SmtpService,
        sink: SmtpSink) -> None:
    for address in LOCAL:
        accounts.add_mailbox(mail_home, address, "secret-load-1")
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    # Not what is tested here; with spamd absent each scan still costs a failed connection.
    set_setting(mail_home, "spam.mailbox_scanning", False)
    set_setting(mail_home, "send.local_concurrency", LOCAL_CONCURRENCY)
    set_setting(mail_home, "send.max_connections", REMOTE_CONCURRENCY)
    dispose_all()
    rng = random.Random(8)
    accepted: dict[str, set[str]] = {}
    stop = threading.Event()

    def client() -> None:
        crng = random.Random(9)
        attempt = 0
        while len(accepted) < SMTP_MESSAGES and not stop.is_set():
            attempt += 1
            token = f"smtp-{attempt}"
            rcpts = crng.sample(LOCAL + REMOTE, crng.randrange(1, 4))
            data = make_message(crng, token).replace(b"\n", b"\r\n")
            try:
                with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=30) as s:
                    s.sendmail("load@remote.test", rcpts, data)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the service is down or went down: not accepted
                continue
            accepted[token] = set(rcpts)

    send_service.start()
    smtp_service.start()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for n in range(SMTP_KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            victims = [send_service, smtp_service] if n % 3 == 2 else \
                [rng.choice([send_service, smtp_service])]
            for victim in victims:
                victim.kill()
            for victim in victims:
                victim.start()
        thread.join(timeout=300)
    finally:
        stop.set()
    assert not thread.is_alive()
    _wait_for_empty_queue(mail_home, send_service)
    send_service.stop()
    _check_deliveries(mail_home, sink, accepted, kills=SMTP_KILLS)
