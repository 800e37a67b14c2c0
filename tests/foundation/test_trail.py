"""The delivery trail (trail.py, trail_logs.py) on log lines written by the node's own line
functions (smtp/loglines.py, delivery/sendlog.py) into multilog directories."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mailyard.delivery import sendlog as S
from mailyard.logs import tai64n
from mailyard.logtools import parser
from mailyard.logtools.webmail import _ACCEPTED_RE as WEBMAIL_ACCEPTED
from mailyard.smtp import loglines as L
from mailyard.smtp import replies
from mailyard.smtp.msgid import MAX_HEADER_BYTES, HeaderScan, message_id_of
from mailyard.trail import (
    CLOCK_SLACK_SECONDS,
    TrailError,
    accepted_line,
    query_of,
    reject_line,
)
from mailyard.trail_logs import trail

T0 = 1_764_000_000.0  # a fixed day, so nothing depends on the clock


class Logs:
    """HOME/log with smtp, submission and send directories written line by line."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}

    def _current(self, service: str) -> Path:
        d = self.root / service
        d.mkdir(parents=True, exist_ok=True)
        return d / "current"

    def line(self, service: str, t: float, text: str) -> None:
        with self._current(service).open("a") as f:
            f.write(f"{tai64n(t)} {text}\n")

    def smtp(self, t: float, text: str, service: str = "smtp", session: str = "77.1") -> None:
        self.line(service, t, L.session(text, session))

    def send(self, t: float, text: str) -> None:
        self.line("send", t, text)

    def rotate(self, service: str, t: float) -> None:
        """Close `current` as multilog does: renamed @<tai64n of t>.s."""
        cur = self._current(service)
        cur.rename(cur.parent / f"{tai64n(t)}.s")


def accept(logs: Logs, t: float, qid: int, sender: str, rcpts: list[str], *,
           user: str = "", service: str = "smtp", **kw: str) -> None:
    kw.setdefault("tls", "TLSv1.3")
    kw.setdefault("helo", "client.example.net")
    logs.smtp(t, L.accepted(str(qid), 1234, sender, rcpts, "192.0.2.7", "ESMTPS", user, 0, 0,
                            **kw), service=service)


def local_success(logs: Logs, t: float, d: int, qid: int, rcpt: str, file: str) -> None:
    logs.send(t, S.starting_delivery(d, str(qid), "local", rcpt))
    logs.send(t + 0.1, S.delivery_result(d, "success",
                                         f"did 1+0+0\nspam score 1.5\nmaildir INBOX {file}"))


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    return Logs(tmp_path / "log")


def test_accept_deliver_success_by_qid_address_and_msgid(logs: Logs) -> None:
    accept(logs, T0, 4242, "someone@example.net", ["ann@example.test"],
           msgid="abc.123@mail.example.net", filters="virus:clean,spam:1.2/10")
    logs.send(T0 + 0.01, S.new_msg("4242"))
    logs.send(T0 + 0.01, S.info_msg("4242", 1234, "someone@example.net", 900, 107))
    local_success(logs, T0 + 0.5, 1, 4242, "ann@example.test", "1764000000.M1P2Q3.node,S=1234")
    logs.send(T0 + 0.7, S.end_msg("4242"))
    for q in ("4242", "ann@example.test", "ANN@Example.Test", "<abc.123@mail.example.net>",
              "abc.123@mail.example.net", "someone@example.net"):
        found = trail(logs.root, query_of(q))
        assert len(found.messages) == 1, q
        m = found.messages[0]
        assert m.qid == 4242 and m.state == "delivered", q
        a = m.accepted
        assert a is not None and a.tls == "TLSv1.3" and a.helo == "client.example.net"
        assert a.ip == "192.0.2.7" and a.msgid == "abc.123@mail.example.net"
        assert a.filters == ["virus:clean", "spam:1.2/10"]
        assert a.reply == "250 2.0.0 Ok: queued as 4242"
        assert m.size == 1234 and m.uid == 107
        (att,) = m.attempts
        assert att.recipient == "ann@example.test" and att.result == "success"
        assert att.maildir_folder == "INBOX"
        assert att.maildir_file == "1764000000.M1P2Q3.node,S=1234"
        assert att.spam_score == "1.5"
        assert m.recipients == {"ann@example.test": "delivered"}
    assert trail(logs.root, query_of("bob@example.test")).messages == []
    assert trail(logs.root, query_of("4243")).messages == []


def test_deferral_then_success_remote(logs: Logs) -> None:
    accept(logs, T0, 77, "ann@example.test", ["x@far.example"], user="ann@example.test",
           service="submission")
    logs.send(T0, S.new_msg("77"))
    logs.send(T0, S.info_msg("77", 500, "ann@example.test", 901, 107))
    logs.send(T0 + 1, S.starting_delivery(3, "77", "remote", "x@far.example"))
    logs.send(T0 + 2, S.delivery_result(3, "deferral",
                                        "192.0.2.99 does not like recipient.\n"
                                        "Remote host said: 451 4.7.1 greylisted\n"))
    found = trail(logs.root, query_of("x@far.example"))
    (m,) = found.messages
    assert m.state == "deferred" and m.accepted.service == "submission"
    assert m.accepted.user == "ann@example.test"
    assert m.attempts[0].remote_host == "192.0.2.99"
    assert "451 4.7.1 greylisted" in m.attempts[0].report
    logs.send(T0 + 600, S.starting_delivery(9, "77", "remote", "x@far.example"))
    logs.send(T0 + 601, S.delivery_result(9, "success",
                                          "192.0.2.99 accepted message.\n"
                                          "Remote host said: 250 ok queued\n"))
    logs.send(T0 + 601, S.end_msg("77"))
    (m,) = trail(logs.root, query_of("77")).messages
    assert m.state == "delivered" and [a.result for a in m.attempts] == ["deferral", "success"]
    assert m.recipients == {"x@far.example": "delivered"}


def test_bounce_is_followed_into_the_bounce_message(logs: Logs) -> None:
    accept(logs, T0, 500, "fred@example.test", ["nobody@far.example"])
    logs.send(T0, S.new_msg("500"))
    logs.send(T0, S.info_msg("500", 300, "fred@example.test", 10, 107))
    logs.send(T0 + 1, S.starting_delivery(1, "500", "remote", "nobody@far.example"))
    logs.send(T0 + 2, S.delivery_result(1, "failure", "192.0.2.5 does not like recipient.\n"
                                        "Remote host said: 550 5.1.1 no such user\n"))
    logs.send(T0 + 2, S.bounce_msg("500", 4711))
    logs.send(T0 + 2, S.new_msg("600"))
    logs.send(T0 + 2, S.info_msg("600", 900, "", 4711, 107))
    logs.send(T0 + 2, S.end_msg("500"))
    local_success(logs, T0 + 3, 2, 600, "fred@example.test", "bounce.file")
    logs.send(T0 + 3, S.end_msg("600"))
    # an unrelated message with another qp is not taken for the bounce
    logs.send(T0 + 4, S.new_msg("601"))
    logs.send(T0 + 4, S.info_msg("601", 900, "", 4712, 107))
    found = trail(logs.root, query_of("500"))
    assert [m.qid for m in found.messages] == [500, 600]
    original, bounce = found.messages
    assert original.state == "bounced" and original.bounce_qid == 600
    assert bounce.bounce_of == 500 and bounce.state == "delivered"
    assert bounce.attempts[0].maildir_file == "bounce.file"


def test_smtp_refusals_by_recipient_and_by_sender(logs: Logs) -> None:
    no_user = replies.NO_SUCH_USER
    logs.smtp(T0, L.reject("192.0.2.9", no_user, "nosuch@example.test", "spammer@bad.example"))
    logs.smtp(T0 + 1, L.reject("192.0.2.9", replies.INBOUND_BLACKLIST,
                               "<spammer@bad.example>"))
    logs.smtp(T0 + 2, L.reject("192.0.2.9", replies.RELAY_DENIED, "other@elsewhere.example"))
    (r,) = trail(logs.root, query_of("nosuch@example.test")).refusals
    assert (r.rule, r.reply, r.sender, r.ip) == ("NO_SUCH_USER", "550 5.1.1",
                                                   "spammer@bad.example", "192.0.2.9")
    assert r.text == no_user.format(address="nosuch@example.test").text
    assert r.session == "77.1"
    by_sender = trail(logs.root, query_of("spammer@bad.example")).refusals
    assert [r.rule for r in by_sender] == ["NO_SUCH_USER", "INBOUND_BLACKLIST"]
    assert trail(logs.root, query_of("nosuch@example.test")).messages == []


def test_a_forged_reply_field_in_a_refused_value_is_not_believed() -> None:
    text = L.session(L.reject("192.0.2.9", replies.NO_SUCH_USER,
                              '"x reply=250 2.0.0"@example.test', "a@b.example"), "1.2")
    r = reject_line("smtp", T0, text)
    assert r is not None and r.reply == "550 5.1.1" and r.sender == "a@b.example"
    assert r.value == '"x reply=250 2.0.0"@example.test'


def test_rotated_files_and_a_queue_id_used_again(logs: Logs) -> None:
    accept(logs, T0, 9, "a@example.net", ["ann@example.test"])
    logs.send(T0, S.new_msg("9"))
    logs.send(T0, S.info_msg("9", 10, "a@example.net", 1, 107))
    logs.rotate("smtp", T0 + 1)
    local_success(logs, T0 + 1, 1, 9, "ann@example.test", "first")
    logs.rotate("send", T0 + 2)
    logs.send(T0 + 2, S.end_msg("9"))
    logs.rotate("send", T0 + 3)
    # the same inode, an hour later, another message to another mailbox
    accept(logs, T0 + 3600, 9, "b@example.net", ["bob@example.test"])
    logs.send(T0 + 3600, S.new_msg("9"))
    logs.send(T0 + 3600, S.info_msg("9", 10, "b@example.net", 2, 107))
    local_success(logs, T0 + 3601, 1, 9, "bob@example.test", "second")
    logs.send(T0 + 3601, S.end_msg("9"))
    assert len(list((logs.root / "send").glob("@*.s"))) == 2
    both = trail(logs.root, query_of("9")).messages
    assert [(m.accepted.sender, m.attempts[0].maildir_file) for m in both] == [
        ("a@example.net", "first"), ("b@example.net", "second")]
    (ann,) = trail(logs.root, query_of("ann@example.test")).messages
    assert ann.attempts[0].maildir_file == "first" and ann.state == "delivered"
    (bob,) = trail(logs.root, query_of("bob@example.test")).messages
    assert bob.attempts[0].maildir_file == "second" and bob.accepted.sender == "b@example.net"


def test_since_leaves_out_what_came_before(logs: Logs) -> None:
    for i, t in enumerate((T0, T0 + 86_400 * 3)):
        accept(logs, t, 100 + i, "a@example.net", ["ann@example.test"])
        logs.send(t, S.new_msg(str(100 + i)))
        local_success(logs, t + 1, i + 1, 100 + i, "ann@example.test", f"f{i}")
        logs.send(t + 1, S.end_msg(str(100 + i)))
        logs.rotate("send", t + 2)
        logs.rotate("smtp", t + 2)
    everything = trail(logs.root, query_of("ann@example.test"))
    assert [m.qid for m in everything.messages] == [100, 101]
    recent = trail(logs.root, query_of("ann@example.test"), since=T0 + 86_400)
    assert [m.qid for m in recent.messages] == [101]


def test_a_delivery_number_used_again_after_a_restart(logs: Logs) -> None:
    accept(logs, T0, 1, "a@example.net", ["ann@example.test"])
    logs.send(T0, S.new_msg("1"))
    logs.send(T0, S.starting_delivery(1, "1", "local", "ann@example.test"))
    logs.send(T0 + 1, "status: exiting")  # stopped with the delivery under way
    logs.send(T0 + 5, S.new_msg("2"))
    logs.send(T0 + 5, S.starting_delivery(1, "2", "local", "bob@example.test"))
    logs.send(T0 + 6, S.delivery_result(1, "failure", "no such mailbox"))
    (m,) = trail(logs.root, query_of("1")).messages
    assert m.attempts[0].result is None and m.state == "in delivery"


def test_many_messages_of_one_address_are_all_followed(logs: Logs) -> None:
    n = 80  # many open at once, all in one block
    for i in range(n):
        accept(logs, T0 + i * 0.01, 1000 + i, "bulk@example.net", ["ann@example.test"])
    for i in range(n):
        logs.send(T0 + 1, S.new_msg(str(1000 + i)))
    for i in range(n):
        local_success(logs, T0 + 2, i + 1, 1000 + i, "ann@example.test", f"f{i}")
        logs.send(T0 + 3, S.end_msg(str(1000 + i)))
    found = trail(logs.root, query_of("bulk@example.net")).messages
    assert len(found) == n and {m.state for m in found} == {"delivered"}


def test_an_acceptance_not_yet_in_the_send_log(logs: Logs) -> None:
    accept(logs, T0, 31, "a@example.net", ["ann@example.test"])
    (m,) = trail(logs.root, query_of("31")).messages
    assert m.state == "accepted" and m.attempts == []
    assert m.to_json()["recipients"] == {"ann@example.test": "queued"}


def test_a_send_line_just_before_its_smtp_line_is_tied_to_it(logs: Logs) -> None:
    accept(logs, T0 + CLOCK_SLACK_SECONDS / 2, 5, "a@example.net", ["ann@example.test"])
    logs.send(T0, S.new_msg("5"))
    (m,) = trail(logs.root, query_of("5")).messages
    assert m.accepted is not None and m.in_send_log


@pytest.mark.parametrize("bad", ["", "   ", "fred", "two words@example.com", "<>", "x" * 400])
def test_a_query_that_is_none_of_the_three_is_refused(bad: str) -> None:
    with pytest.raises(TrailError, match="address|nothing to look for|at most"):
        query_of(bad)


# ---- the SMTP log line itself -------------------------------------------------------------


def test_accepted_line_makes_client_chosen_values_safe() -> None:
    sender = '"evil\r\n@4000 accepted qid=1 ip=10.0.0.1"@example.net'
    line = L.accepted("12", 99, sender, ['"a b"@example.test', "c%d@example.test"],
                      "192.0.2.7", "ESMTP", "us er", 0, 0, tls="no", helo="he lo\x01",
                      msgid="id with space@x")
    assert "\r" not in line and "\n" not in line and "\x01" not in line
    assert line.count(" ip=") == 1 and line.count("accepted qid=") == 1
    m = WEBMAIL_ACCEPTED.search(line)  # xwebmail still reads the client's address
    assert m is not None and m[1] == "12" and m[2] == "192.0.2.7"
    a = accepted_line("smtp", T0, L.session(line, "5.5"))
    assert a is not None and a.qid == 12 and a.ip == "192.0.2.7"
    assert a.sender == '"evil__@4000_accepted_qid=1_ip=10.0.0.1"@example.net'
    assert a.recipients == ['"a_b"@example.test', "c_d@example.test"]
    assert (a.user, a.helo, a.tls, a.msgid, a.session) == (
        "us_er", "he_lo_", "no", "id_with_space@x", "5.5")


def test_accepted_line_of_the_older_format_is_read_too() -> None:
    old = ("accepted qid=2147200 size=1722 from=<a@remote.example> to=<joe@example.org> "
           "ip=192.0.2.7 protocol=ESMTP session=812.17")
    a = accepted_line("smtp", T0, old)
    assert a is not None and a.tls is None and a.helo is None and a.msgid == ""
    assert a.recipients == ["joe@example.org"]


def test_the_log_tools_still_take_accepted_and_reject_lines_as_other_lines() -> None:
    line = L.accepted("12", 99, "a@b", ["c@d"], "192.0.2.7", "ESMTP", "", 0, 0,
                      tls="TLSv1.3", helo="x", msgid="m@x", filters="spam:1/10")
    assert isinstance(parser.parse(line), parser.Other)
    assert re.search(r" tls=TLSv1\.3 helo=x msgid=<m@x> filters=spam:1/10$", line)


def test_local_report_lines_are_parseable_by_the_log_tools() -> None:
    text = S.delivery_result(4, "success", "did 1+0+0\nspam score 2\nmaildir .Spam f,S=1")
    ev = parser.parse(text)
    assert isinstance(ev, parser.DeliveryResult) and ev.result == "success"
    assert ev.report.startswith("did_1+0+0/")


# ---- the Message-ID ---------------------------------------------------------------------


def test_message_id_from_the_header_block_fed_in_pieces() -> None:
    msg = (b"From: a@b\r\nSubject: hi\r\nMessage-ID:\r\n <split.id@host.example>\r\n"
           b"\r\nMessage-ID: <body@not.header>\r\n")
    scan = HeaderScan()
    for i in range(0, len(msg), 3):
        scan.feed(msg[i:i + 3])
    assert scan.message_id == "split.id@host.example"
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <in@body>") == ""
    assert message_id_of(b"message-id: bare@id trailing\n") == "bare@id"
    assert message_id_of(b"X-Message-ID: <no@x>\n") == ""


def test_a_message_without_a_header_has_no_message_id() -> None:
    scan = HeaderScan()
    scan.feed(b"\r")
    scan.feed(b"\nMessage-ID: <in@body>\r\n")
    assert scan.message_id == ""


def test_message_id_past_the_header_limit_is_not_looked_for() -> None:
    scan = HeaderScan()
    scan.feed(b"X-Filler: " + b"a" * MAX_HEADER_BYTES + b"\r\n")
    scan.feed(b"Message-ID: <late@x>\r\n\r\n")
    assert scan.message_id == ""


def test_a_link_or_a_fifo_in_a_log_directory_is_not_read(logs: Logs, tmp_path: Path) -> None:
    """The trail may run as root over directories the mail owner controls."""
    outside = tmp_path / "secret"
    outside.write_text(f"{tai64n(T0)} " + L.accepted("7", 1, "a@b.example", ["c@d.example"],
                                                      "192.0.2.1", "ESMTP", "", 0, 0) + "\n")
    accept(logs, T0 + 1, 8, "a@b.example", ["c@d.example"])
    logs.rotate("smtp", T0 + 2)
    (logs.root / "smtp" / "current").symlink_to(outside)
    (logs.root / "smtp" / f"{tai64n(T0 + 0.5)}.s").symlink_to(outside)
    os.mkfifo(logs.root / "smtp" / f"{tai64n(T0 + 0.7)}.s")
    found = trail(logs.root, query_of("a@b.example"))
    assert [m.qid for m in found.messages] == [8]


def test_the_administrators_actions_are_in_the_trail(logs: Logs) -> None:
    accept(logs, T0, 44, "a@example.net", ["x@far.example"])
    logs.send(T0, S.new_msg("44"))
    logs.send(T0 + 1, "hold msg 44: administrator")
    logs.send(T0 + 2, "release msg 44")
    logs.send(T0 + 3, "warning: msg 44 deleted by the administrator")
    logs.send(T0 + 3, S.end_msg("44"))
    (m,) = trail(logs.root, query_of("a@example.net")).messages
    assert [(a["action"], a["reason"]) for a in m.actions] == [
        ("hold", "administrator"), ("release", ""), ("delete", "")]
    assert m.state == "deleted" and m.recipients == {"x@far.example": "queued"}
    accept(logs, T0 + 10, 45, "a@example.net", ["x@far.example"])
    logs.send(T0 + 10, S.new_msg("45"))
    logs.send(T0 + 11, "hold msg 45: rate limit a@example.net")
    (held,) = trail(logs.root, query_of("45")).messages
    assert held.state == "held" and held.actions[0]["reason"] == "rate limit a@example.net"
