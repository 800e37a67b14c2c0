"""The queue browser with no send service running: filters, paging, holds, bounce, delete,
and `mailyard queue show --json` (the running service's side is in
tests/delivery/test_queue_admin_service.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from mailyard.delivery import queue_actions
from mailyard.home import Home
from mailyard.logtools.parser import QueueAction, parse
from mailyard.queue import Envelope, Queue, QueueError, admin, attempts, holds, listing, select
from mailyard.queue import state as qstate


def _inject(home: Home, rcpts: list[str], sender: str = "a@sender.test", **env: object) -> str:
    with Queue(home.queue_dir).open_message() as w:
        w.write(f"From: {sender}\nSubject: s\n\nbody\n".encode())
        return w.commit(Envelope(sender=sender, recipients=rcpts, **env))  # type: ignore[arg-type]


def _split(home: Home, qid: str) -> None:
    q = Queue(home.queue_dir)
    qstate.split_todo(q, [(qid, qstate.read_todo(q, qid))],
                      lambda r: r.endswith("@example.test"))


def _ids(items: list[admin.QueuedMessage]) -> list[str]:
    return [m.id for m in items]


def _age(home: Home, qid: str, seconds: float) -> None:
    """Make message `qid` look `seconds` old (its envelope's commit time)."""
    q = Queue(home.queue_dir)
    state = "todo" if q.path("todo", qid).exists() else "info"
    path = q.path(state, qid)
    env = Envelope.from_bytes(path.read_bytes())
    env.time -= seconds
    tmp = path.with_name(f"{qid}.new")  # a new file: a new inode, as the queue writes them
    tmp.write_bytes(env.to_bytes())
    os.replace(tmp, path)


def test_filters_pick_messages_by_sender_recipient_domain_age_state_and_hold(
        home: Home) -> None:
    old = _inject(home, ["joe@example.test"], sender="boss@corp.test")
    deferred = _inject(home, ["bob@far.test", "ann@mail.far.test"])
    failed = _inject(home, ["joe@example.test", "zed@else.test"], sender="")
    fresh = _inject(home, ["x@example.test"])
    for qid in (old, deferred, failed):
        _split(home, qid)
    _age(home, old, 7200)
    q = Queue(home.queue_dir)
    attempts.write(q, deferred, {"bob@far.test": {"attempts": 2, "last_reply": "452 full",
                                                  "next_retry": time.time() + 600}})
    qstate.add_bounce_report(q, failed, qstate.BounceReport("zed@else.test", "no such user"))
    qstate.mark_done(q, "remote", failed, 0)
    stored = qstate.load_message(q, deferred)
    assert stored is not None  # ann@ was delivered, bob@ is waiting for the next retry
    qstate.mark_done(q, "remote", deferred, stored.recipients["remote"][1].offset)
    holds.hold(q, fresh, "look at it")

    assert _ids(admin.list_messages(home, sender="BOSS")) == [old]
    assert _ids(admin.list_messages(home, sender="<>")) == [failed]
    assert _ids(admin.list_messages(home, recipient="ann@")) == [deferred]
    assert _ids(admin.list_messages(home, domain="far.test")) == [deferred]
    assert _ids(admin.list_messages(home, domain="example.test")) == [old, failed, fresh]
    assert _ids(admin.list_messages(home, older_than="1h")) == [old]
    assert _ids(admin.list_messages(home, state="deferred")) == [deferred]
    assert _ids(admin.list_messages(home, state="failed")) == [failed]
    assert _ids(admin.list_messages(home, state="pending")) == [old, failed, fresh]
    assert _ids(admin.list_messages(home, state="done")) == [deferred]
    assert _ids(admin.list_messages(home, held=True)) == [fresh]
    assert _ids(admin.list_messages(home, held=False)) == [old, deferred, failed]
    assert _ids(admin.list_messages(home, "todo")) == [fresh]
    assert admin.stats(home)["held"] == 1

    with pytest.raises(QueueError, match=r"--older-than: '3 days' is not a duration"):
        admin.list_messages(home, older_than="3 days")
    with pytest.raises(QueueError, match=r"state: 'stuck' is not a recipient state; choose "
                                         r"one of pending, deferred, done, failed"):
        admin.list_messages(home, state="stuck")
    assert select.parse_duration("2w") == 14 * 86400 and select.parse_duration("45") == 45


def test_pages_count_every_match_and_return_one_slice(home: Home) -> None:
    ids = [_inject(home, [f"u{i}@far.test"]) for i in range(7)]
    f = select.make_filter(domain="far.test")
    first = admin.page(home, f, 0, 3)
    assert first["total"] == 7 and _ids(first["messages"]) == ids[:3]
    assert _ids(admin.page(home, f, 6, 3)["messages"]) == ids[6:]
    # the cached listing sees a message go and a new one (often with the same id) come;
    # what a page shows of it is its own envelope
    admin.act(home, "delete", [ids[0]])
    again = _inject(home, ["late@far.test"], sender="new@sender.test")
    shown = admin.page(home, f, 0, 10)["messages"]
    assert sorted(_ids(shown)) == sorted(ids[1:] + [again])
    late = next(m for m in shown if m.id == again)
    assert late.sender == "new@sender.test" and late.recipients[0].address == "late@far.test"
    assert _ids(admin.list_messages(home, sender="new@")) == [again]
    with pytest.raises(QueueError, match="the limit from 1 to 500"):
        admin.page(home, f, 0, 0)


def test_an_action_needs_ids_or_a_filter_and_names_bad_ids(home: Home) -> None:
    _inject(home, ["joe@example.test"])
    with pytest.raises(QueueError, match="give queue ids or a filter"):
        admin.act(home, "hold")
    with pytest.raises(QueueError, match=r"'12x' is not a queue id"):
        admin.act(home, "hold", ["12x"])
    with pytest.raises(QueueError, match=r"no message '999999999' in the queue"):
        admin.act(home, "release", ["999999999"])
    with pytest.raises(QueueError, match=r"unknown action 'freeze'; choose one of hold"):
        admin.act(home, "freeze", ["1"])


def test_hold_and_release_without_the_service_are_durable_files(home: Home) -> None:
    one = _inject(home, ["joe@example.test"])
    two = _inject(home, ["bob@far.test"], sender="spam@bad.test")
    result = admin.act(home, "hold", f=select.make_filter(sender="spam@"),
                       reason="compromised\naccount")
    assert result["ids"] == [two] and result["via"] == "direct" and result["changed"] == 1
    q = Queue(home.queue_dir)
    assert holds.held_ids(q) == {two} and holds.reason(q, two) == "compromised account"
    assert oct(os.stat(q.path("hold", two)).st_mode & 0o777) == "0o640"
    detail = admin.show(home, two)
    assert detail.held and detail.hold_reason == "compromised account"
    assert admin.act(home, "hold", [two])["changed"] == 0  # already held: the reason stays
    assert admin.act(home, "release", [one, two])["changed"] == 1
    assert holds.held_ids(q) == set()
    # a removed message takes its hold with it: a reused id is never held by accident
    admin.act(home, "hold", [one])
    admin.act(home, "delete", [one])
    assert not q.path("hold", one).exists()


def test_bounce_without_the_service_fails_the_recipients_for_the_bounce_at_start(
        home: Home) -> None:
    waiting = _inject(home, ["joe@example.test", "bob@far.test"], sender="me@corp.test")
    split = _inject(home, ["ann@far.test"])
    _split(home, split)
    result = admin.act(home, "bounce", [waiting, split])
    assert result["changed"] == 2
    q = Queue(home.queue_dir)
    for qid, rcpts in ((waiting, {"joe@example.test", "bob@far.test"}),
                       (split, {"ann@far.test"})):
        reports = qstate.read_bounce_reports(q, qid)
        assert {r.recipient for r in reports} == rcpts
        assert {r.status for r in reports} == {"5.0.0"}
        stored = qstate.load_message(q, qid)
        assert stored is not None and all(r.done for c in qstate.CHANNELS
                                          for r in stored.recipients[c])
        item = admin.show(home, qid)
        assert item.status == "bounce" and {r.state for r in item.recipients} == {"failed"}


def test_show_json_gives_each_recipients_state_attempts_reply_and_next_retry(
        home: Home, cli_env: dict[str, str]) -> None:
    qid = _inject(home, ["joe@example.test", "bob@far.test", "zed@far.test", "ann@far.test"],
                  sender="fred@example.test", client_ip="192.0.2.7", helo="pc.example",
                  auth_user="fred@example.test")
    _split(home, qid)
    q = Queue(home.queue_dir)
    later = time.time() + 900
    attempts.write(q, qid, {"bob@far.test": {"attempts": 3, "last_reply": "452 4.2.2 full",
                                             "next_retry": later}})
    qstate.add_bounce_report(q, qid, qstate.BounceReport("zed@far.test", "no", "5.1.1",
                                                         "mx.far.test", "550 5.1.1 unknown"))
    stored = qstate.load_message(q, qid)
    assert stored is not None
    zed = next(r for r in stored.recipients["remote"] if r.address == "zed@far.test")
    ann = next(r for r in stored.recipients["remote"] if r.address == "ann@far.test")
    qstate.mark_done(q, "remote", qid, zed.offset)
    qstate.mark_done(q, "remote", qid, ann.offset)

    out = subprocess.run(["mailyard", "queue", "show", qid, "--json"], env=cli_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["sender"] == "fred@example.test" and data["client_ip"] == "192.0.2.7"
    assert data["helo"] == "pc.example" and data["auth_user"] == "fred@example.test"
    assert data["size"] > 0 and data["age_seconds"] >= 0 and data["held"] is False
    by = {r["address"]: r for r in data["recipients"]}
    assert by["joe@example.test"] | {} == {
        "address": "joe@example.test", "channel": "local", "done": False, "state": "pending",
        "attempts": 0, "last_reply": None, "next_retry": None}
    assert by["bob@far.test"]["state"] == "deferred" and by["bob@far.test"]["attempts"] == 3
    assert by["bob@far.test"]["last_reply"] == "452 4.2.2 full"
    assert by["bob@far.test"]["next_retry"] == listing.iso_time(later)
    assert by["zed@far.test"]["state"] == "failed"
    assert by["zed@far.test"]["last_reply"] == "550 5.1.1 unknown"
    assert by["ann@far.test"]["state"] == "done" and by["ann@far.test"]["channel"] == "remote"

    # a held message has no next retry: nothing is tried until it is released
    held = subprocess.run(["mailyard", "queue", "hold", qid, "--reason", "check"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert held.returncode == 0 and "held: 1 message(s)" in held.stdout, held.stderr
    data = json.loads(subprocess.run(["mailyard", "queue", "show", qid, "--json"], env=cli_env,
                                     capture_output=True, text=True, timeout=60).stdout)
    assert data["held"] and data["hold_reason"] == "check"
    assert {r["address"]: r["next_retry"] for r in data["recipients"]}["bob@far.test"] is None


def test_cli_refuses_an_action_without_ids_or_filter_and_a_bad_duration(
        home: Home, cli_env: dict[str, str]) -> None:
    _inject(home, ["joe@example.test"])
    for args, text in ((["queue", "hold"], "give queue ids or a filter"),
                       (["queue", "delete", "--older-than", "soon"],
                        "--older-than: 'soon' is not a duration")):
        out = subprocess.run(["mailyard", *args], env=cli_env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 2 and text in out.stderr, (out.stdout, out.stderr)
    listed = subprocess.run(["mailyard", "queue", "list", "--domain", "example.test",
                             "--state", "pending", "--json"], env=cli_env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1


def test_the_send_log_lines_of_the_actions_are_read_by_the_log_tools() -> None:
    assert parse(queue_actions.hold_msg("42", "rate limit fred@example.test")) == \
        QueueAction(42, "hold", "rate limit fred@example.test")
    assert parse(queue_actions.hold_msg("42", "")) == QueueAction(42, "hold", "administrator")
    assert parse(queue_actions.release_msg("42")) == QueueAction(42, "release")
    assert parse(queue_actions.retry_msg("42")) == QueueAction(42, "retry")
    assert parse(queue_actions.bounced_msg("42")) == QueueAction(42, "bounce")
