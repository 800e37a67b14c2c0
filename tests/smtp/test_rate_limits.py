"""Outbound rate limits without a network: the pure decision (ratelimit) and the counter file
(ratetable) shared by several processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.home import Home
from mailyard.smtp import policy as P
from mailyard.smtp import ratelimit as RL
from mailyard.smtp.ratetable import RateTable, held_keys, on_over_limit

HOUR = RL.WINDOW_SECONDS
T0 = 1_800_000_000.0  # a fixed moment (a multiple of the bucket length)
LIMITS = RL.Limits(messages_per_hour=3, recipients_per_hour=5, domain_messages_per_hour=4)


def joe(override: int | None = None) -> RL.Sender:
    return RL.mailbox_sender("Joe@Example.ORG", override)


def test_keys_name_the_sender() -> None:
    assert joe().key == "mailbox:joe@example.org" and joe().domain_key == "domain:example.org"
    assert RL.uid_sender(33).key == "uid:33" and RL.uid_sender(33).domain_key == ""
    assert RL.ip_sender("192.0.2.7", "Example.org").domain_key == "domain:example.org"


def test_messages_limit_then_reset_after_the_hour() -> None:
    own: list[RL.Bucket] = []
    for i in range(3):
        assert RL.verdict(LIMITS, joe(), own, [], T0 + i, recipients=1) is None
        own = RL.added(own, T0 + i, 1, 1)
    found = RL.verdict(LIMITS, joe(), own, [], T0 + 10, recipients=1)
    assert found is not None and found.rule == RL.MESSAGES and found.limit == 3
    assert found.count == 3 and found.key == "mailbox:joe@example.org"
    assert found.resets_at == T0 + HOUR  # all three were counted in the first bucket
    assert "limit of 3 messages per hour" in found.describe()
    assert RL.verdict(LIMITS, joe(), own, [], T0 + HOUR, recipients=1) is None


def test_the_window_slides_bucket_by_bucket() -> None:
    own = RL.added([], T0, 1, 1)
    own = RL.added(own, T0 + 2 * RL.BUCKET_SECONDS, 2, 2)
    found = RL.verdict(LIMITS, joe(), own, [], T0 + 3 * RL.BUCKET_SECONDS)
    assert found is not None and found.resets_at == T0 + HOUR  # the first bucket frees one
    later = T0 + HOUR
    assert RL.totals(own, later) == (2, 2)
    assert RL.verdict(LIMITS, joe(), own, [], later) is None


def test_recipients_and_domain_limits() -> None:
    own = RL.added([], T0, 1, 4)
    found = RL.verdict(LIMITS, joe(), own, [], T0, recipients=2)
    assert found is not None and found.rule == RL.RECIPIENTS and found.limit == 5
    assert RL.verdict(LIMITS, joe(), own, [], T0, recipients=1) is None
    domain = RL.added([], T0, 4, 4)
    found = RL.verdict(LIMITS, joe(), [], domain, T0, recipients=1)
    assert found is not None and found.rule == RL.DOMAIN and found.key == "domain:example.org"
    # a sender without a domain (sendmail of a user owning none) is not counted for one
    assert RL.verdict(LIMITS, RL.uid_sender(33), [], domain, T0, recipients=1) is None


def test_a_mailbox_override_and_zero_for_no_limit() -> None:
    own = RL.added([], T0, 3, 3)
    assert RL.verdict(LIMITS, joe(10), own, [], T0, recipients=1) is None
    found = RL.verdict(LIMITS, joe(1), [], [], T0 + 1, messages=2)
    assert found is not None and found.limit == 1
    assert RL.verdict(LIMITS, joe(0), RL.added([], T0, 99, 0), [], T0) is None
    none = RL.Limits(0, 0, 0)
    assert not none.any and RL.verdict(none, joe(), own, own, T0, recipients=100) is None


def test_the_early_check_counts_the_transactions_recipients() -> None:
    own = RL.added([], T0, 1, 3)
    assert RL.over_now(LIMITS, joe(), own, [], T0, recipients_so_far=1) is None
    found = RL.over_now(LIMITS, joe(), own, [], T0, recipients_so_far=2)
    assert found is not None and found.rule == RL.RECIPIENTS


def test_the_reply_names_the_key_and_the_limit() -> None:
    found = RL.Verdict(RL.MESSAGES, "mailbox:joe@example.org", 3, 3, T0)
    reply = P.rate_limit_reply(found)
    assert bytes(reply).startswith(b"451 4.7.1 mailbox:joe@example.org is over its limit of 3 "
                                   b"messages per hour")
    assert reply.name == "RATE_LIMIT_MESSAGES"
    assert P.rate_limit_reply(RL.Verdict(RL.DOMAIN, "domain:x.test", 9, 9, T0)).name == \
        "RATE_LIMIT_DOMAIN"


_steps = st.lists(st.tuples(st.integers(0, 2 * HOUR), st.integers(0, 3)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps=_steps, limit=st.integers(1, 10))
def test_never_more_than_the_limit_in_any_hour(steps: list[tuple[int, int]], limit: int) -> None:
    """Whatever the timing, what is let through never exceeds the limit in any hour-long
    window of buckets, and a refusal's reset time is in the future and within the hour."""
    limits = RL.Limits(limit, 0, 0)
    own: list[RL.Bucket] = []
    sent: list[float] = []
    now = T0
    for delay, _ in steps:
        now += delay
        found = RL.verdict(limits, joe(), own, [], now, recipients=1)
        if found is None:
            own = RL.added(own, now, 1, 1)
            sent.append(now)
        else:
            assert now < found.resets_at <= RL.bucket_start(now) + HOUR
            assert RL.verdict(limits, joe(), own, [], found.resets_at, recipients=1) is None
        window_start = RL.bucket_start(now) - (RL.BUCKETS - 1) * RL.BUCKET_SECONDS
        assert sum(1 for t in sent if t >= window_start) <= limit
        assert RL.totals(own, now)[0] == sum(1 for t in sent if t >= window_start)


# ---- the counter file ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_counts_are_shared_by_processes_and_survive_reopening(home: Home) -> None:
    clock = Clock(T0)
    first = RateTable(home, clock)
    assert first.charge(LIMITS, joe(), 2) is None
    pid = os.fork()
    if pid == 0:  # another process counting in the same file
        code = 1
        try:
            other = RateTable(home, clock)
            code = 0 if other.charge(LIMITS, joe(), 1) is None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    first.close()
    again = RateTable(home, clock)
    assert again.buckets(joe())[0] == [(int(T0), 2, 3)]
    assert again.charge(LIMITS, joe(), 1) is None
    found = again.charge(LIMITS, joe(), 1)  # the fourth message of the hour
    assert found is not None and found.rule == RL.MESSAGES
    counts, over = again.report()
    assert counts["mailbox:joe@example.org"] == (3, 4)
    assert counts["domain:example.org"] == (3, 4)
    assert over["mailbox:joe@example.org"][1:] == [RL.MESSAGES, 3, 3]
    clock.now = T0 + HOUR  # an hour on: nothing is left, the file shrinks back
    assert again.report() == ({}, {})
    assert again.charge(LIMITS, joe(), 1) is None
    assert set(again.report()[0]) == {"mailbox:joe@example.org", "domain:example.org"}
    mode = (home.root / "var/limits/rates").stat().st_mode & 0o777
    assert mode == 0o640


def test_a_message_without_remote_recipients_is_not_counted(home: Home) -> None:
    table = RateTable(home, Clock(T0))
    for _ in range(10):
        assert table.charge(LIMITS, joe(), 0) is None
    assert table.report() == ({}, {})


def test_a_damaged_file_counts_as_empty(home: Home) -> None:
    table = RateTable(home, Clock(T0))
    table.charge(LIMITS, joe(), 1)
    path = home.root / "var/limits/rates"
    with open(path, "r+b") as f:  # another header: not our table
        f.write(b"garbage!")
    assert table.report() == ({}, {})
    assert table.charge(LIMITS, joe(), 1) is None
    assert table.buckets(joe())[0] == [(int(T0), 1, 1)]
    os.truncate(path, 100)  # cut short: the table is made whole again, never read past its end
    assert table.buckets(joe()) == ([], [])
    assert table.charge(LIMITS, joe(), 1) is None


def test_many_senders_each_keep_their_own_count(home: Home) -> None:
    table = RateTable(home, Clock(T0))
    senders = [RL.mailbox_sender(f"user{i}@d{i % 7}.test") for i in range(3000)]
    for sender in senders:
        assert table.charge(RL.Limits(2, 0, 0), sender, 1) is None
    assert table.charge(RL.Limits(2, 0, 0), senders[1234], 1) is None
    found = table.charge(RL.Limits(2, 0, 0), senders[1234], 1)
    assert found is not None and found.key == "mailbox:user1234@d2.test"
    counts, over = table.report()
    assert len([k for k in counts if k.startswith("mailbox:")]) == 3000
    assert counts["domain:d2.test"] == (430, 430) and list(over) == [found.key]


def test_a_link_in_place_of_the_file_is_not_followed(home: Home, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("secret")
    limits_dir = home.root / "var/limits"
    limits_dir.mkdir(parents=True, exist_ok=True)
    (limits_dir / "rates").symlink_to(target)
    try:
        RateTable(home)
    except OSError:
        pass
    else:
        raise AssertionError("a link was followed")
    assert target.read_text() == "secret"


def test_on_over_limit_logs_and_records_the_key_only_when_asked(home: Home) -> None:
    lines: list[str] = []
    found = RL.Verdict(RL.MESSAGES, "uid:33", 3, 3, T0 + 60)
    on_over_limit(home, found.key, found, LIMITS, lines.append)
    assert lines == [f"rate-limit rule=messages key=uid:33 limit=3 count=3 resets={int(T0) + 60}"]
    assert held_keys(home) == []
    holding = RL.Limits(3, 5, 4, hold_when_over=True)
    on_over_limit(home, found.key, found, holding, lines.append)
    on_over_limit(home, found.key, found, holding, lines.append)
    assert held_keys(home) == ["uid:33"]


def test_concurrent_processes_and_threads_never_pass_the_limit(home: Home) -> None:
    """Four processes, each with four threads, charge one key at once: exactly the limit is
    let through (the decision and the count happen under one lock)."""
    limits = RL.Limits(messages_per_hour=150, recipients_per_hour=0, domain_messages_per_hour=0)
    RateTable(home).close()  # the file exists before the processes race to open it
    read_end, write_end = os.pipe()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                table = RateTable(home)
                passed: list[int] = []
                threads = [threading.Thread(target=_charge_25, args=(table, limits, passed))
                           for _ in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                os.write(write_end, f"{len(passed)}\n".encode())
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(write_end)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with os.fdopen(read_end) as results:
        passed = sum(int(line) for line in results)
    assert passed == 150
    counts, over = RateTable(home).report()
    assert counts["uid:7"] == (150, 150) and over["uid:7"][1] == RL.MESSAGES


def _charge_25(table: RateTable, limits: RL.Limits, passed: list[int]) -> None:
    for _ in range(25):
        if table.charge(limits, RL.uid_sender(7), 1) is None:
            passed.append(1)
