"""Reading qmail-send's lines: stamps, events, decoded reports, and never a crash on garbage."""

from __future__ import annotations

import io
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.logtools import filters
from mailyard.logtools.operators import attempts
from mailyard.logtools.parser import (
    BounceMsg,
    DeliveryResult,
    EndMsg,
    InfoMsg,
    Malformed,
    NewMsg,
    Other,
    StartDelivery,
    Status,
    TripleBounce,
    decode_report,
    mailbox_address,
    parse,
    remote_host,
)
from mailyard.logtools.sources import stamped_lines
from mailyard.logtools.tai64n import Clock, split_stamp, tai64n_to_unix, unix_to_tai64n
from mailyard.logtools.tracking import Diagnostics, Tracker


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ---- stamps -----------------------------------------------------------------------------------

def test_tai64n_label_is_two_to_the_62_plus_ten_plus_unix_seconds() -> None:
    # 2011-11-08 02:13:44.5 UTC, as multilog wrote it
    assert tai64n_to_unix("400000004eb890581dcd6500") == pytest.approx(1320718414.5)
    assert unix_to_tai64n(1320718414.5) == "400000004eb890581dcd6500"


def test_the_three_stamp_forms_display_the_same_local_time() -> None:
    clock = Clock()
    forms = ["@400000004eb890581dcd6500 new msg 1",
             "2011-11-08 02:13:34.500000000 new msg 1",
             "1320718414.500000 new msg 1"]
    stamps = [split_stamp(f) for f in forms]
    assert [s.kind for s in stamps] == ["tai64n", "local", "unix"]
    assert {clock.display(s) for s in stamps} == {"2011-11-08 02:13:34.500000"}
    assert {clock.unix(s) for s in stamps} == {1320718414.5}
    assert {s.text for s in stamps} == {"new msg 1"}


@pytest.mark.parametrize("line", [
    "", "\n", "new msg 1", "@4000 new msg 1", "@zzzzzzzzzzzzzzzzzzzzzzzz new msg 1",
    "2011-11-08 new msg 1", "12 new msg 1", " @400000004eb890581dcd6500 new msg 1",
])
def test_lines_without_a_readable_stamp_are_recognised_as_such(line: str) -> None:
    assert split_stamp(line) is None


# ---- events -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "event"), [
    ("new msg 655364", NewMsg(655364)),
    ("info msg 655364: bytes 2345 from <alice@example.com> qp 4001 uid 1001",
     InfoMsg(655364, 2345, "alice@example.com", 4001, 1001)),
    ("info msg 7: bytes 10 from <> qp 1 uid 2", InfoMsg(7, 10, "", 1, 2)),
    ("starting delivery 3: msg 655364 to remote bob@gmail.com",
     StartDelivery(3, 655364, "remote", "bob@gmail.com")),
    ("starting delivery 2: msg 655364 to local example.com-carol@example.com",
     StartDelivery(2, 655364, "local", "example.com-carol@example.com")),
    ("delivery 2: success: did_0+0+1/", DeliveryResult(2, "success", "did_0+0+1/")),
    ("delivery 5: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/",
     DeliveryResult(5, "failure", "Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/")),
    ("delivery 8: deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/",
     DeliveryResult(8, "deferral",
                    "Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/")),
    ("delivery 12: report mangled, will defer", DeliveryResult(12, "mangled", "")),
    ("end msg 655364", EndMsg(655364)),
    ("bounce msg 655366 qp 4010", BounceMsg(655366, 4010)),
    ("triple bounce: discarding bounce/655372", TripleBounce(655372)),
    ("status: local 1/10 remote 2/20", Status("status: local 1/10 remote 2/20")),
    ("status: exiting", Status("status: exiting")),
    ("warning: trouble opening local/1/655371; will try again later",
     Other("warning: trouble opening local/1/655371; will try again later")),
    ("new msg twelve", Malformed("new msg twelve")),
    ("starting delivery 3: msg 1 to elsewhere x@y", Malformed("starting delivery 3: msg 1 to "
                                                               "elsewhere x@y")),
    ("delivery 5: succ", Malformed("delivery 5: succ")),
])
def test_each_qmail_send_line_becomes_its_event(text: str, event: object) -> None:
    assert parse(text) == event


# ---- reports ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("report", "text"), [
    ("did_0+0+1/", "did 0+0+1"),
    ("209.85.1.2_accepted_message./Remote_host_said:_250_2.0.0_OK_1320718429_x12si/",
     "209.85.1.2 accepted message. / Remote host said: 250 2.0.0 OK 1320718429 x12si"),
    ("Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/",
     "Sorry, no mailbox here by that name. (#5.1.1)"),
    # Gmail's multi-line reply with a link: the link's slashes are kept.
    ("Remote_host_said:_550-5.1.1_Learn_more_at/550_5.1.1__https://support.google.com/mail/"
     "?p=NoSuchUser_a1si/Giving_up_on_209.85.1.3./",
     "Remote host said: 550-5.1.1 Learn more at / 550 5.1.1  "
     "https://support.google.com/mail/?p=NoSuchUser a1si / Giving up on 209.85.1.3."),
    # A link that ends a reply line, followed by the next SMTP reply line.
    ("Remote_host_said:_550-see_http://x.example/help/550_denied/",
     "Remote host said: 550-see http://x.example/help / 550 denied"),
    ("", ""),
])
def test_reports_are_decoded_underscores_to_spaces_slashes_to_line_breaks(
        report: str, text: str) -> None:
    assert decode_report(report) == text


@pytest.mark.parametrize(("report", "host"), [
    ("209.85.1.2_accepted_message./Remote_host_said:_250_ok/", "209.85.1.2"),
    ("209.85.1.3_does_not_like_recipient./Remote_host_said:_550_no/Giving_up_on_209.85.1.3./",
     "209.85.1.3"),
    ("Connected_to_98.136.1.2_but_greeting_failed./Remote_host_said:_421_busy/", "98.136.1.2"),
    ("Sorry,_I_couldn't_find_any_host_named_nowhere.example._(#5.1.2)/", "nowhere.example"),
    ("Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/", ""),
])
def test_the_remote_host_is_read_from_qmail_remotes_report(report: str, host: str) -> None:
    assert remote_host(report) == host


@pytest.mark.parametrize(("logged", "address"), [
    ("example.com-carol@example.com", "carol@example.com"),
    ("EXAMPLE.com-carol@example.com", "carol@example.com"),
    ("carol@example.com", "carol@example.com"),
    ("first-last@example.com", "first-last@example.com"),
    ("postmaster", "postmaster"),
])
def test_local_recipients_lose_the_virtual_domain_prefix(logged: str, address: str) -> None:
    assert mailbox_address(logged) == address


# ---- never a traceback ------------------------------------------------------------------------

qmailish = st.sampled_from([
    "new msg ", "info msg ", "starting delivery ", "delivery ", "end msg ", "bounce msg ",
    "triple bounce: discarding bounce/", "status: ", ": bytes ", " from <", "> qp ", " uid ",
    " to remote ", " to local ", ": success: ", ": deferral: ", ": failure: ", "1", "23",
    "@4000000054b5a1f2123456b4 ", "2011-11-08 02:13:44.123456500 ", "1320717224.123456 ",
    "_", "/", "\n", "\x00", "\udcff", "é",
])
line_text = st.one_of(st.text(max_size=80), st.lists(qmailish, max_size=12).map("".join))


@given(line_text)
def test_parsing_any_text_never_raises(text: str) -> None:
    parse(text)
    split_stamp(text)
    decode_report(text)
    remote_host(text)
    mailbox_address(text)


@settings(max_examples=200)
@given(st.lists(line_text, max_size=40))
def test_operators_and_filters_never_raise_on_any_input(lines: list[str]) -> None:
    data = "\n".join(lines)
    for rules in (filters.xrcpt(["a@b"]), filters.xsend(["<>", "@b"]),
                  filters.xuser(["b"]), filters.xwebmail(1)):
        diag = Diagnostics()
        filters.run_filter(stamped_lines(io.StringIO(data), "x", diag), io.StringIO(),
                           Tracker(diag, 3, 3), *rules)
    diag = Diagnostics()
    for _ in attempts(stamped_lines(io.StringIO(data), "x", diag), Tracker(diag, 3, 3)):
        pass
    diag.summary()
