"""The plain functions of delivery, without a network: routes, retry schedule, send log lines,
SMTP replies, dot-stuffing, bounces, delivery results."""

from __future__ import annotations

import email
import email.policy
import io
import random
import threading
import time

import pytest

from mailyard import fssync
from mailyard.delivery import sendlog
from mailyard.delivery.bounce import build_bounce
from mailyard.delivery.groupsync import GroupSync
from mailyard.delivery.local import delivered_to, header_block, mailbox_copy
from mailyard.delivery.loops import Self, hosts_better_than_me
from mailyard.delivery.resolve import MailHost, parse_resolver_setting
from mailyard.delivery.result import deferral, failure
from mailyard.delivery.retry import expired, next_retry
from mailyard.delivery.routes import Route, check_routes, route_for
from mailyard.delivery.smtp_reply import ReplyError, ReplyReader, dot_stuffed, stuff_block
from mailyard.delivery.tls_policy import policy_for
from mailyard.fssync import FsSync, syncfs_fd
from mailyard.logtools import parser
from mailyard.queue import Envelope
from mailyard.queue.state import BounceReport
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError

# ---- SMTP routes (guide 4.6.1) -----------------------------------------------------------------


def test_route_exact_domain_with_port() -> None:
    assert route_for(["domain.tld:relay.tld:26"], "domain.tld") == \
        Route("relay.tld", 26, "domain.tld:relay.tld:26")
    assert route_for(["domain.tld:relay.tld:26"], "other.tld") == Route(None)


def test_route_empty_relay_means_mx() -> None:
    assert route_for(["domain.tld:", ":relay.tld"], "domain.tld").relay is None
    assert route_for(["domain.tld:", ":relay.tld"], "x.tld").relay == "relay.tld"


def test_route_dot_domain_matches_subdomains_only() -> None:
    lines = [".domain.tld:", ":relay.tld"]
    assert route_for(lines, "mail.domain.tld").relay is None
    assert route_for(lines, "a.b.domain.tld").relay is None
    assert route_for(lines, "domain.tld").relay == "relay.tld"
    assert route_for(lines, "xdomain.tld").relay == "relay.tld"


@pytest.mark.parametrize("lines", [
    [":wild.tld", ".tld:tld.tld", ".domain.tld:sub.tld", "domain.tld:whole.tld"],
    ["domain.tld:whole.tld", ".domain.tld:sub.tld", ".tld:tld.tld", ":wild.tld"],
    [".tld:tld.tld", ":wild.tld", "domain.tld:whole.tld", ".domain.tld:sub.tld"],
])
def test_route_is_chosen_as_qmail_remote_does_whatever_the_line_order(lines: list[str]) -> None:
    assert route_for(lines, "DOMAIN.tld").relay == "whole.tld"  # the whole host first
    assert route_for(lines, "a.b.domain.tld").relay == "sub.tld"  # then the longest .suffix
    assert route_for(lines, "other.tld").relay == "tld.tld"
    assert route_for(lines, "example.org").relay == "wild.tld"  # then the : line


def test_route_case_and_trailing_dot_are_ignored_and_a_later_duplicate_wins() -> None:
    assert route_for(["Domain.TLD:relay.tld"], "domain.tld.").relay == "relay.tld"
    assert route_for(["a.tld:one.tld", "a.tld:two.tld"], "a.tld").relay == "two.tld"


def test_route_bracketed_address_relay() -> None:
    assert route_for([":[192.0.2.7]:2525"], "x.tld") == Route("192.0.2.7", 2525,
                                                              ":[192.0.2.7]:2525")


def test_route_check_names_the_bad_line() -> None:
    assert check_routes(["a.tld:relay.tld", ":relay.tld:26"]) == ["a.tld:relay.tld",
                                                                  ":relay.tld:26"]
    with pytest.raises(ValueError, match="line 2: 'a.tld relay.tld'"):
        check_routes(["b.tld:", "a.tld relay.tld"])
    with pytest.raises(ValueError, match="line 1: .*99999"):
        check_routes(["a.tld:relay.tld:99999"])


# ---- retry schedule -------------------------------------------------------------------------


def test_retry_intervals_grow_like_qmail() -> None:
    birth = 1_000_000.0
    week = 604800
    now = birth
    times = []
    for _ in range(8):
        now = next_retry(birth, now, "remote", week)
        times.append(now - birth)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 400  # (0 + 20)^2: the first remote retry after 400 s
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False))
    assert next_retry(birth, birth, "local", week) - birth == 100


def test_retry_is_capped_at_the_end_of_the_lifetime() -> None:
    birth = 1_000_000.0
    assert next_retry(birth, birth + 10, "remote", 60) == birth + 60
    assert not expired(birth, birth + 59.9, 60)
    assert expired(birth, birth + 60, 60)


# ---- send log lines -------------------------------------------------------------------------


def test_report_encoding_is_qmails_logsafe() -> None:
    assert sendlog.encode_report("did 1+0+0\n") == "did_1+0+0/"
    assert sendlog.encode_report("a b\n550 5.1.1 no%such\tuser é") == \
        "a_b/550_5.1.1_no_such_user___/"


def test_log_lines_parse_as_qmail_lines() -> None:
    lines = [
        sendlog.new_msg("123"),
        sendlog.info_msg("123", 456, "a b@x.test", 77, 1000),
        sendlog.starting_delivery(5, "123", "local", "joe@example.test"),
        sendlog.starting_delivery(6, "123", "remote", "bob@far.test"),
        sendlog.delivery_result(5, "success", "did 1+0+0"),
        sendlog.delivery_result(6, "failure", "1.2.3.4 does not like recipient.\n"
                                              "Remote host said: 550 no"),
        sendlog.bounce_msg("123", 88),
        sendlog.end_msg("123"),
        sendlog.triple_bounce("124"),
        sendlog.status(1, 10, 2, 20),
    ]
    events = [parser.parse(line) for line in lines]
    assert events[0] == parser.NewMsg(123)
    assert events[1] == parser.InfoMsg(123, 456, "a_b@x.test", 77, 1000)
    assert events[2] == parser.StartDelivery(5, 123, "local", "example.test-joe@example.test")
    assert parser.mailbox_address(events[2].recipient) == "joe@example.test"
    assert events[3] == parser.StartDelivery(6, 123, "remote", "bob@far.test")
    assert events[4] == parser.DeliveryResult(5, "success", "did_1+0+0/")
    assert events[5] == parser.DeliveryResult(
        6, "failure", "1.2.3.4_does_not_like_recipient./Remote_host_said:_550_no/")
    assert events[6] == parser.BounceMsg(123, 88)
    assert events[7] == parser.EndMsg(123)
    assert events[8] == parser.TripleBounce(124)
    assert events[9] == parser.Status("status: local 1/10 remote 2/20")


# ---- SMTP replies and DATA ------------------------------------------------------------------


def test_multiline_reply_and_ehlo_keywords() -> None:
    reader = ReplyReader()
    assert reader.feed(b"250-mx.test hello\r\n") is None
    assert reader.feed(b"250-STARTTLS\r\n") is None
    reply = reader.feed(b"250 SIZE 1000\r\n")
    assert reply is not None and reply.code == 250
    assert reply.keywords() == {"STARTTLS", "SIZE"}
    assert reply.text == "250-mx.test hello\n250-STARTTLS\n250 SIZE 1000"


@pytest.mark.parametrize("line", [b"hello\r\n", b"2500 x\r\n", b"099 x\r\n", b"25\r\n"])
def test_garbage_is_not_a_reply(line: bytes) -> None:
    with pytest.raises(ReplyError):
        ReplyReader().feed(line)


def test_reply_code_may_not_change_inside_a_reply() -> None:
    reader = ReplyReader()
    reader.feed(b"250-a\r\n")
    with pytest.raises(ReplyError):
        reader.feed(b"550 b\r\n")


def test_dot_stuffing_and_line_endings() -> None:
    stored = [b"a\n", b".b\r\n", b"..c\n", b"\n", b"last"]
    assert b"".join(dot_stuffed(stored)) == b"a\r\n..b\r\n...c\r\n\r\nlast\r\n"


# ---- local delivery helpers -----------------------------------------------------------------


def test_delivered_to_lines_come_from_the_header_only() -> None:
    msg = (b"Delivered-To: A@x.test\r\nSubject: s\r\nDELIVERED-TO:  b@x.test\r\n\r\n"
           b"Delivered-To: c@x.test\r\n")
    assert delivered_to(msg) == ["a@x.test", "b@x.test"]
    assert header_block(b"A: 1\n\nB: 2\r\n\r\n") == b"A: 1"


def test_mailbox_copy_has_return_path_and_unix_lines() -> None:
    env = Envelope(sender="", recipients=["joe@x.test"])
    assert mailbox_copy(env, "joe@x.test", b"S: 1\r\n\r\nbody\r\n") == \
        b"Return-Path: <>\nDelivered-To: joe@x.test\nS: 1\n\nbody\n"


# ---- bounces --------------------------------------------------------------------------------


def test_bounce_is_an_rfc3464_report_with_the_original_headers() -> None:
    reports = [BounceReport("gone@far.test", "1.2.3.4 does not like recipient.\n"
                            "Remote host said: 550 5.1.1 gone", "5.1.1", "1.2.3.4",
                            "550 5.1.1 gone"),
               BounceReport("nobody@x.test", "Sorry, no mailbox here by that name. (#5.1.1)",
                            "5.1.1")]
    original = b"From: a@x.test\r\nSubject: hello\r\n\r\nsecret body\r\n"
    data = build_bounce(hostname="mx.x.test", from_addr="mailer-daemon@x.test",
                        to_addr="a@x.test", reports=reports, original=original,
                        arrival=1_700_000_000, qid="42")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"].addresses[0].addr_spec == "a@x.test"
    assert msg["From"].addresses[0].addr_spec == "mailer-daemon@x.test"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                     "text/rfc822-headers"]
    status_text = data.split(b"message/delivery-status")[1].split(b"--")[0].decode()
    assert "Reporting-MTA: dns; mx.x.test" in status_text
    assert "Final-Recipient: rfc822; gone@far.test" in status_text
    assert "Remote-MTA: dns; 1.2.3.4" in status_text
    assert "Diagnostic-Code: smtp; 550 5.1.1 gone" in status_text
    assert "Final-Recipient: rfc822; nobody@x.test" in status_text
    assert "Action: failed" in status_text
    assert b"Subject: hello" in data and b"secret body" not in data


def test_result_status_comes_from_the_reply_or_the_report() -> None:
    assert failure("x", diagnostic="550 5.7.1 spam").enhanced_status() == "5.7.1"
    assert failure("Sorry, no mailbox here by that name. (#5.1.1)").enhanced_status() == "5.1.1"
    assert failure("plain").enhanced_status() == "5.0.0"
    assert deferral("plain").enhanced_status() == "4.0.0"


def test_resolver_setting() -> None:
    assert parse_resolver_setting("") is None
    assert parse_resolver_setting("127.0.0.1@5353") == ("127.0.0.1", 5353)
    assert parse_resolver_setting("::1") == ("::1", 53)
    with pytest.raises(ValueError):
        parse_resolver_setting("resolver.example@53")


# ---- dot-stuffing by blocks, TLS policy lookup, MX hosts around ourselves ----------------------

def test_stuff_block_equals_line_by_line_stuffing() -> None:
    rng = random.Random(7)
    pieces = [b".", b"..", b"a", b"\r", b"\n", b"\r\n", b" ", b"x.y"]
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        expected = b"".join(dot_stuffed(io.BytesIO(data)))
        assert stuff_block(data) == expected, data


def test_tls_policy_lookup_relay_domain_and_parents() -> None:
    table = ["far.test verify", ".far.test encrypt", "relay.test none", "10.0.0.1 encrypt"]
    assert policy_for(table, "may", "far.test") == "verify"
    assert policy_for(table, "may", "a.b.far.test") == "encrypt"
    assert policy_for(table, "may", "other.test") == "may"
    assert policy_for(table, "may", "far.test", relay="relay.test") == "none"
    assert policy_for(table, "may", "far.test", relay="[10.0.0.1]") == "encrypt"
    assert policy_for(table, "may", "far.test", relay="unlisted.test") == "may"


def test_mx_hosts_at_or_after_our_preference_are_dropped() -> None:
    me = Self.make("mx.me.test", "", [2525], ["192.0.2.7"])
    hosts = [MailHost("a.test", ("192.0.2.1",), 5), MailHost("b.test", ("192.0.2.2",), 10),
             MailHost("mx.me.test", ("192.0.2.9",), 10), MailHost("c.test", ("192.0.2.3",), 20)]
    assert [h.name for h in hosts_better_than_me(hosts, me, 25)] == ["a.test"]
    by_address = [MailHost("a.test", ("192.0.2.1",), 5), MailHost("n.test", ("192.0.2.7",), 5)]
    assert hosts_better_than_me(by_address, me, 25) == []
    assert me.is_me("127.0.0.1", 2525) and not me.is_me("127.0.0.1", 25)
    assert not me.is_me("192.0.2.1", 25)


@pytest.mark.parametrize("value", ["1.2.3", "host.test", "10.0.0.1:0", "10.0.0.1:70000",
                                   "[::1]25", "::1:25x"])
def test_own_addresses_setting_refuses_what_is_not_an_address(value: str) -> None:
    with pytest.raises(SettingError) as err:
        setting("send.own_addresses").parse(value)
    assert "send.own_addresses" in str(err.value) and value in str(err.value)


@pytest.mark.parametrize("value", ["far.test", "far.test sometimes", "bad_name! may"])
def test_tls_policy_setting_refuses_bad_lines(value: str) -> None:
    with pytest.raises(SettingError) as err:
        setting("send.tls_policy").parse(value)
    assert "send.tls_policy" in str(err.value)


# ---- group commit of directory fsyncs ----------------------------------------------------------

def test_group_sync_shares_rounds_and_covers_every_caller(tmp_path) -> None:
    calls: list[float] = []
    gate = threading.Event()

    def slow_sync(path) -> None:
        calls.append(len(calls))
        gate.wait(10)

    sync = GroupSync(slow_sync)
    finished: list[int] = []
    threads = [threading.Thread(target=lambda i=i: (sync.sync(tmp_path), finished.append(i)))
               for i in range(8)]
    threads[0].start()
    while not calls:  # the first round is under way; the others arrive during it
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    while sync.waiting < 7:  # every other caller waits for the one next round
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(finished) == list(range(8))
    assert len(calls) == 2  # the first caller's round, then one round for the seven others


def test_group_sync_failure_fails_the_callers_it_covered(tmp_path) -> None:
    def failing(path) -> None:
        raise OSError(5, "Input/output error")

    sync = GroupSync(failing)
    with pytest.raises(OSError):
        sync.sync(tmp_path)
    sync2 = GroupSync()
    sync2.sync(tmp_path)  # a real fsync of a real directory
    assert sync2.rounds == 1


# ---- syncfs rounds (fssync.py) ---------------------------------------------------------------

def _callers(sync: FsSync, path, n: int, calls: list[int]) -> tuple[list, dict[int, str]]:
    """Start n threads calling sync(path): the first alone, the rest once its round runs."""
    outcome: dict[int, str] = {}

    def call(i: int) -> None:
        try:
            sync.sync(path)
            outcome[i] = "ok"
        except OSError as err:
            outcome[i] = err.strerror or str(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    threads[0].start()
    while not calls:  # the first round is under way; the others arrive during it
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    while sync.waiting < n - 1:
        time.sleep(0.001)
    return threads, outcome


def test_syncfs_rounds_are_shared_by_the_callers_that_arrive_during_one(tmp_path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def slow(fd: int) -> None:
        calls.append(fd)
        gate.wait(10)
        syncfs_fd(fd)

    sync = FsSync(slow)
    threads, outcome = _callers(sync, tmp_path, 8, calls)
    gate.set()
    for t in threads:
        t.join(10)
    assert outcome == {i: "ok" for i in range(8)}
    assert len(calls) == 2  # the first caller's round, then one round for the seven others
    sync.close()


def test_a_failed_syncfs_round_fails_also_the_callers_waiting_for_the_next(tmp_path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def failing(fd: int) -> None:
        calls.append(fd)
        gate.wait(10)
        raise OSError(5, "Input/output error")

    sync = FsSync(failing)
    threads, outcome = _callers(sync, tmp_path, 5, calls)
    gate.set()
    for t in threads:
        t.join(10)
    # Their writes may have been among the pages whose write-back failed: every one fails.
    assert outcome == {i: "Input/output error" for i in range(5)}
    assert len(calls) == 1
    sync.close()


def test_a_real_syncfs_round(tmp_path) -> None:
    assert fssync.available()  # Linux: the send service uses syncfs rounds
    sync = FsSync()
    (tmp_path / "f").write_bytes(b"data")
    sync.sync(tmp_path)
    sync.sync(str(tmp_path))
    assert sync.rounds == 2
    sync.close()
