"""The queue browser's actions while the send service runs, through the `mailyard` command:
holds survive restarts and are never delivered, release and retry deliver at once, bounce
sends the sender a DSN, delete takes a filter; attempts and last replies are kept."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from send_harness import (
    SendService,
    SmtpSink,
    inject,
    maildir_messages,
    read_send_log,
    wait_until,
)
from tests.conftest import VENV_BIN

from mailyard.home import Home
from mailyard.queue import Queue, holds
from mailyard.queue import control as qcontrol
from mailyard.store.settings_store import set_setting


def _mailyard(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(home.root),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    out = subprocess.run(["mailyard", *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def _show(home: Home, qid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_mailyard(home, "queue", "show", qid, "--json").stdout)
    return data


def _subjects(home: Home, address: str) -> list[str]:
    out = []
    for data in maildir_messages(home, address):
        for line in data.split(b"\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode().strip())
    return sorted(out)


def _deferrals(home: Home, count: int) -> bool:
    return sum(": deferral: " in line for line in read_send_log(home)) >= count


def test_a_hold_survives_restarts_and_release_delivers(mail_home: Home,
                                                      send_service: SendService) -> None:
    held = inject(mail_home, ["joe@example.test"], subject="held one")
    out = _mailyard(mail_home, "queue", "hold", held, "--reason", "check first")
    assert "directly (send is not running)" in out.stdout
    for round_ in (1, 2):  # a fresh start, then a restart: the hold is read from disk
        send_service.start()
        inject(mail_home, ["joe@example.test"], subject=f"marker {round_}")
        # Waited for in the mailbox, not by its queue id in the log: a queue id is an inode
        # number, and the second marker may get the first one's (removed once delivered).
        wait_until(lambda r=round_: f"marker {r}" in _subjects(mail_home,  # type: ignore[misc]
                                                                "joe@example.test"),
                   what="the marker's delivery")
        # the held message was due from the start, before the marker came in
        assert _subjects(mail_home, "joe@example.test") == [
            f"marker {n}" for n in range(1, round_ + 1)]
        assert _show(mail_home, held)["hold_reason"] == "check first"
        assert send_service.stop() == 0
    send_service.start()
    # (start() may see the last run's status lines: wait for the new service's lock)
    wait_until(lambda: qcontrol.service_running(Queue(mail_home.queue_dir)),
               what="send to hold the queue")
    out = _mailyard(mail_home, "queue", "release", held)
    assert "by the send service" in out.stdout
    wait_until(lambda: f"end msg {held}" in read_send_log(mail_home), what="the release")
    assert "held one" in _subjects(mail_home, "joe@example.test")
    assert f"release msg {held}" in read_send_log(mail_home)
    assert not holds.is_held(Queue(mail_home.queue_dir), held)


def test_deferred_mail_held_retried_and_counted_across_a_restart(
        mail_home: Home, send_service: SendService, sink: SmtpSink) -> None:
    sink.default_rcpt_reply = "452 4.2.2 mailbox full"
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    qid = inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    wait_until(lambda: _deferrals(mail_home, 1), what="the first deferral")
    bob = _show(mail_home, qid)["recipients"][0]
    assert bob["state"] == "deferred" and bob["attempts"] == 1 and bob["channel"] == "remote"
    assert "452 4.2.2 mailbox full" in bob["last_reply"] and bob["next_retry"]

    # counts go on after a restart (which makes everything due at once)
    assert send_service.stop() == 0
    send_service.start()
    wait_until(lambda: _deferrals(mail_home, 2), what="the attempt at the restart")
    wait_until(lambda: _show(mail_home, qid)["recipients"][0]["attempts"] == 2,
               what="the second attempt to be counted")

    _mailyard(mail_home, "queue", "hold", qid)
    assert f"hold msg {qid}: administrator" in read_send_log(mail_home)
    sink.default_rcpt_reply = "250 2.1.5 ok"
    _mailyard(mail_home, "queue", "retry", qid)  # held: retry does not release it
    _mailyard(mail_home, "queue", "process")
    marker = inject(mail_home, ["carl@far.test"])
    wait_until(lambda: f"end msg {marker}" in read_send_log(mail_home), what="the marker")
    assert [m.recipients for m in sink.messages] == [["carl@far.test"]]
    assert f"retry msg {qid}" not in read_send_log(mail_home)

    _mailyard(mail_home, "queue", "release", qid)
    wait_until(lambda: f"end msg {qid}" in read_send_log(mail_home), what="the delivery")
    assert [m.recipients for m in sink.messages] == [["carl@far.test"], ["bob@far.test"]]


def test_retry_bounce_and_delete_by_filter(mail_home: Home, send_service: SendService,
                                           sink: SmtpSink) -> None:
    sink.default_rcpt_reply = "451 4.3.0 try later"
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    retried = inject(mail_home, ["ann@far.test"])
    bounced = inject(mail_home, ["bob@far.test"], sender="joe@example.test",
                     subject="will come back")
    deleted = inject(mail_home, ["carl@spam.test"])
    wait_until(lambda: _deferrals(mail_home, 3), what="three deferrals")

    out = _mailyard(mail_home, "queue", "delete", "--domain", "spam.test", "--json")
    assert json.loads(out.stdout)["ids"] == [deleted]
    assert f"warning: msg {deleted} deleted by the administrator" in read_send_log(mail_home)

    _mailyard(mail_home, "queue", "bounce", bounced)
    wait_until(lambda: maildir_messages(mail_home, "joe@example.test"), what="the bounce")
    dsn = maildir_messages(mail_home, "joe@example.test")[0]
    assert b"multipart/report; report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; bob@far.test" in dsn and b"Status: 5.0.0" in dsn
    assert b"Subject: will come back" in dsn  # the original headers go back with it
    log = read_send_log(mail_home)
    assert f"warning: msg {bounced} bounced by the administrator" in log
    assert any(line.startswith(f"bounce msg {bounced} qp ") for line in log)

    sink.default_rcpt_reply = "250 2.1.5 ok"
    _mailyard(mail_home, "queue", "retry", retried)
    assert f"retry msg {retried}" in read_send_log(mail_home)
    wait_until(lambda: f"end msg {retried}" in read_send_log(mail_home), what="the retry")
    assert [m.recipients for m in sink.messages] == [["ann@far.test"]]
