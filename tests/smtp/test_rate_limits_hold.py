"""limits.hold_when_over on the running submission service: a sender that passes its hourly
limit has the mail it queued before held for review, through queue.admin (smtp/rate_hold.py);
other senders' mail is left alone. The queue filter on who queued a message is checked here
too (queue/select.py)."""

from __future__ import annotations

import time

from smtp_helpers import JOE, change
from test_rate_limits_smtp import MESSAGE, REMOTE, logged_in

from mailyard.home import Home
from mailyard.queue import Envelope, Queue, holds
from mailyard.queue.select import make_filter, matches_envelope
from mailyard.smtp.rate_hold import HOLD_REASON, filter_for
from mailyard.smtp.ratetable import held_keys

WAIT_SECONDS = 60.0  # a bound on waiting for the hold, not a measured time


def test_a_sender_over_its_limit_has_its_queued_mail_held(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"limits.messages_per_hour": 2, "limits.hold_when_over": True})
    q = Queue(node.queue_dir)
    with q.open_message() as w:  # another user's mail, queued before
        w.write(b"Subject: other\r\n\r\nnot joe's\r\n")
        other = w.commit(Envelope(sender="ann@example.org", recipients=[REMOTE],
                                  auth_user="ann@example.org", client_ip="192.0.2.8"))
    start("submission")
    with logged_in(node) as s:
        for _ in range(2):
            assert s.sendmail(JOE, [REMOTE], MESSAGE) == {}
        assert not holds.held_ids(q)  # under the limit: nothing held
        assert s.mail(JOE)[0] == 250
        assert s.rcpt(REMOTE)[0] == 451
        s.rset()
    joes = {qid for qid in q.ids("todo") if qid != other}
    assert len(joes) == 2
    assert held_keys(node) == ["mailbox:joe@example.org"]
    deadline = time.monotonic() + WAIT_SECONDS
    while holds.held_ids(q) != joes:
        assert time.monotonic() < deadline, f"held: {holds.held_ids(q)}, joe's: {joes}"
        time.sleep(0.2)
    for qid in joes:
        assert holds.reason(q, qid) == HOLD_REASON.format(key="mailbox:joe@example.org")
    assert other not in holds.held_ids(q)


def test_each_sender_key_becomes_a_filter_on_who_queued_the_message() -> None:
    class Item:
        sender, recipients, time, held, channels = "x@example.org", [REMOTE], 0.0, False, set()
        auth_user, uid, client_ip = "Joe@Example.org", 1001, "192.0.2.7"

    now = time.time()
    for key in ("mailbox:joe@example.org", "uid:1001", "ip:192.0.2.7"):
        f = filter_for(key)
        assert f is not None and not f.empty() and matches_envelope(Item, f, now), key
    for key in ("mailbox:ann@example.org", "uid:1002", "ip:192.0.2.8"):
        f = filter_for(key)
        assert f is not None and not matches_envelope(Item, f, now), key
    assert filter_for("domain:example.org") is None  # not one sender
    assert filter_for("uid:x") is None and filter_for("mailbox:") is None
    assert make_filter(uid=0).uid == 0 and not make_filter(uid=0).empty()
