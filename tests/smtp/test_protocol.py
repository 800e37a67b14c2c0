"""The sans-io SMTP session: bytes in, events out, replies in; no sockets anywhere."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.smtp import replies as R
from mailyard.smtp.events import (
    Auth,
    AuthResponse,
    BadInput,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Event,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from mailyard.smtp.lines import MAX_COMMAND_LINE
from mailyard.smtp.protocol import (
    MAX_ERRORS,
    TRANSITIONS,
    ProtocolError,
    ServerConnection,
    State,
)

POSITIVE: dict[type[Event], R.Reply] = {
    Ehlo: R.EHLO_OK.format(lines="mx.test\nPIPELINING"),
    Helo: R.HELO_OK.format(hostname="mx.test"),
    MailFrom: R.SENDER_OK,
    RcptTo: R.RECIPIENT_OK,
    Data: R.START_DATA,
    EndOfData: R.QUEUED.format(qid="1"),
    Rset: R.RESET_OK,
    Noop: R.OK,
    Quit: R.CLOSING.format(hostname="mx.test"),
    Vrfy: R.CANNOT_VRFY,
    Help: R.HELP,
    StartTls: R.READY_FOR_TLS,
    Auth: R.AUTH_CHALLENGE.format(challenge=""),
    AuthResponse: R.AUTH_OK,
}


def accept_all(event: Event) -> R.Reply:
    if isinstance(event, BadInput):
        return event.reply
    return POSITIVE[type(event)]


def greeted(tls: bool = False) -> ServerConnection:
    c = ServerConnection("192.0.2.1", tls=tls)
    assert c.greet(R.GREETING.format(greeting="mx.test")) == b"220 mx.test ESMTP\r\n"
    return c


def drive(c: ServerConnection, data: bytes = b"",
          answer: Callable[[Event], R.Reply] = accept_all) -> tuple[list[Event], bytes]:
    """Feed data, answer every event, return the events and everything written back."""
    if data:
        c.receive_data(data)
    seen: list[Event] = []
    out = b""
    while (event := c.next_event()) is not None:
        seen.append(event)
        if isinstance(event, (DataChunk, ConnectionClosed)):
            continue
        reply = answer(event)
        out += c.send(reply, user="someone@example.org" if reply.code == 235 else None)
        if c.state is State.TLS_STARTING:
            break
    return seen, out


def kinds(events: list[Event]) -> list[type[Event]]:
    return [type(e) for e in events]


def test_a_whole_transaction_in_one_pipelined_burst() -> None:
    c = greeted()
    seen, out = drive(c, b"EHLO client.test\r\nMAIL FROM:<a@x.test> SIZE=10\r\n"
                         b"RCPT TO:<b@y.test>\r\nDATA\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n")
    assert kinds(seen) == [Ehlo, MailFrom, RcptTo, Data, DataChunk, EndOfData, Quit]
    chunk = seen[4]
    assert isinstance(chunk, DataChunk) and chunk.data == b"hello\r\n.dot\r\n"
    mail = seen[1]
    assert isinstance(mail, MailFrom) and mail.params == {"SIZE": "10"}
    assert out.count(b"\r\n") == 7 and out.endswith(b"221 2.0.0 mx.test closing connection\r\n")
    assert c.state is State.CLOSED
    assert c.session.messages == 1


def test_events_come_one_at_a_time_and_each_needs_its_reply() -> None:
    c = greeted()
    c.receive_data(b"EHLO a\r\nNOOP\r\n")
    assert isinstance(c.next_event(), Ehlo)
    with pytest.raises(ProtocolError):
        c.next_event()


def test_greeting_comes_first() -> None:
    c = ServerConnection("192.0.2.1")
    c.receive_data(b"EHLO early\r\n")
    with pytest.raises(ProtocolError):
        c.next_event()
    c.greet(R.GREETING.format(greeting="mx"))
    assert isinstance(c.next_event(), Ehlo)  # said before the greeting, read after it


@pytest.mark.parametrize("data, hint", [
    (b"MAIL FROM:<a@x>\r\n", b"Send HELO or EHLO first"),
    (b"EHLO a\r\nRCPT TO:<a@x>\r\n", b"Need MAIL before RCPT"),
    (b"EHLO a\r\nDATA\r\n", b"Need MAIL before DATA"),
    (b"EHLO a\r\nMAIL FROM:<a@x>\r\nDATA\r\n", b"Need RCPT before DATA"),
    (b"EHLO a\r\nMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\n", b"Nested MAIL command"),
    (b"EHLO a\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN\r\n", b"AUTH is not allowed during"),
    (b"EHLO a\r\nMAIL FROM:<a@x>\r\nSTARTTLS\r\n", b"STARTTLS is not allowed during"),
])
def test_commands_out_of_sequence_get_503(data: bytes, hint: bytes) -> None:
    c = greeted()
    seen, out = drive(c, data)
    assert isinstance(seen[-1], BadInput)
    last = out.split(b"\r\n")[-2]
    assert last.startswith(b"503 5.5.1 ") and hint in last


def test_refused_session_accepts_only_quit() -> None:
    c = ServerConnection("192.0.2.9")
    c.greet(R.RBL_LISTED.format(ip="192.0.2.9", zone="bl.test"))
    seen, out = drive(c, b"EHLO a\r\nMAIL FROM:<a@x>\r\nQUIT\r\n")
    assert kinds(seen) == [BadInput, BadInput, Quit]
    assert out.count(b"503 5.5.1 ") == 2 and out.endswith(b"221 2.0.0 mx.test closing connection\r\n")


def test_command_line_over_512_octets_gets_500_and_the_session_goes_on() -> None:
    c = greeted()
    longest = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 7)  # 512 with CRLF
    seen, out = drive(c, longest + b"\r\n" + longest + b"x\r\n" + b"NOOP " + b"y" * 5000
                      + b"\r\nEHLO a\r\n")
    assert kinds(seen) == [Noop, BadInput, BadInput, Ehlo]
    replies = out.split(b"\r\n")
    assert replies[0].startswith(b"250 ")
    assert replies[1].startswith(b"500 5.5.2 Line too long") and replies[2].startswith(b"500 ")


def test_auth_lines_may_be_longer_than_commands() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    blob = b"A" * 2000
    seen, _ = drive(c, b"AUTH PLAIN " + blob + b"\r\n")
    assert isinstance(seen[0], Auth) and seen[0].initial == blob.decode()


@pytest.mark.parametrize("line", [
    b"MAIL FROM:<a@x.test>\rRCPT TO:<evil@y.test>",
    b"MAIL FROM:<a@x.test>\nRCPT TO:<evil@y.test>",
    b"RCPT TO:<b@y.test\n>",
    b"HELO a\x00b",
    b"MAIL FROM:<j\xc3\xa9@x.test>",
])
def test_cr_lf_nul_and_8bit_inside_commands_are_refused(line: bytes) -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    seen, out = drive(c, line + b"\r\n")
    assert kinds(seen) == [BadInput]
    assert out.startswith(b"500 5.5.2 ")
    assert c.session.sender is None


def test_starttls_discards_commands_pipelined_after_it() -> None:
    c = greeted()
    seen, out = drive(c, b"EHLO a\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y>\r\n")
    assert kinds(seen) == [Ehlo, StartTls]
    assert c.state is State.TLS_STARTING
    c.receive_data(b"RSET\r\n")  # more clear text before the handshake: ignored too
    assert c.next_event() is None
    c.tls_started()
    assert c.state is State.INITIAL and c.session.tls and not c.session.helo
    assert c.next_event() is None  # nothing of the clear text survived
    seen, _ = drive(c, b"MAIL FROM:<a@x.test>\r\n")
    assert isinstance(seen[0], BadInput)  # EHLO again first (RFC 3207 4.2)


def test_starttls_twice_is_refused() -> None:
    c = greeted(tls=True)
    seen, out = drive(c, b"EHLO a\r\nSTARTTLS\r\n")
    assert isinstance(seen[1], BadInput) and b"TLS is already active" in out


def test_failed_starttls_reply_keeps_the_session_in_clear() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    c.receive_data(b"STARTTLS\r\nNOOP\r\n")
    assert isinstance(c.next_event(), StartTls)
    c.send(R.NOT_OFFERED.format(command="STARTTLS"))
    assert c.state is State.READY
    assert isinstance(c.next_event(), Noop)


def test_bare_lf_dot_lf_inside_data_does_not_end_the_message() -> None:
    c = greeted()
    smuggled = (b"EHLO a\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
                b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<spoof@y.test>\nRCPT TO:<v@y.test>\n"
                b"DATA\nSubject: smuggled\n\r\n.\r\n")
    seen, _ = drive(c, smuggled)
    assert kinds(seen).count(EndOfData) == 1
    assert kinds(seen).count(MailFrom) == 1
    body = b"".join(e.data for e in seen if isinstance(e, DataChunk))
    assert b"MAIL FROM:<spoof@y.test>" in body


def test_mail_transaction_is_reset_by_rset_and_by_ehlo() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRSET\r\n")
    assert c.state is State.READY and c.session.sender is None and not c.session.recipients
    drive(c, b"MAIL FROM:<a@x.test>\r\nEHLO again\r\n")
    assert c.state is State.READY and c.session.sender is None and c.session.helo == "again"


def test_refused_recipient_is_not_recorded() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\nMAIL FROM:<a@x.test>\r\n")

    def refuse(event: Event) -> R.Reply:
        return R.RELAY_DENIED.format(address="b@y.test") if isinstance(event, RcptTo) \
            else accept_all(event)

    drive(c, b"RCPT TO:<b@y.test>\r\n", refuse)
    assert c.state is State.MAIL and c.session.recipients == []
    seen, out = drive(c, b"DATA\r\n")
    assert out.startswith(b"503 5.5.1 Need RCPT")


def test_disconnect_in_the_middle_of_data_is_reported() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\npartial")
    c.receive_data(b"")
    seen, _ = drive(c)
    assert isinstance(seen[-1], ConnectionClosed) and seen[-1].in_data


def test_null_sender_is_allowed_and_null_recipient_is_not() -> None:
    c = greeted()
    seen, out = drive(c, b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<>\r\n")
    mail = seen[1]
    assert isinstance(mail, MailFrom) and mail.path.is_null
    assert isinstance(seen[2], BadInput) and out.split(b"\r\n")[-2].startswith(b"501 5.1.3")


def test_auth_exchange_lines_are_responses_not_commands() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    c.receive_data(b"AUTH LOGIN\r\nQUIT\r\n")
    assert isinstance(c.next_event(), Auth)
    c.send(R.AUTH_CHALLENGE.format(challenge="VXNlcm5hbWU6"))
    response = c.next_event()
    assert response == AuthResponse("QUIT")
    c.send(R.AUTH_FAILED)
    assert c.state is State.READY


def test_the_machine_records_a_successful_auth_itself() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    c.receive_data(b"AUTH PLAIN AGpvZUBleGFtcGxlLm9yZwBzZWNyZXQ=\r\n")
    assert isinstance(c.next_event(), Auth)
    c.send(R.AUTH_OK, user="joe@example.org")
    assert c.session.auth_user == "joe@example.org" and c.state is State.READY
    # ...and only a 235 signs in: a 535 records nobody
    d = greeted()
    drive(d, b"EHLO a\r\n")
    d.receive_data(b"AUTH LOGIN\r\n")
    d.next_event()
    d.send(R.AUTH_CHALLENGE.format(challenge="VXNlcm5hbWU6"))
    d.receive_data(b"am9l\r\n")
    d.next_event()
    d.send(R.AUTH_FAILED, user="joe@example.org")
    assert d.session.auth_user == ""


def test_a_successful_auth_without_a_user_is_a_bug_of_the_driver() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    c.receive_data(b"AUTH PLAIN AGpvZUBleGFtcGxlLm9yZwBzZWNyZXQ=\r\n")
    c.next_event()
    with pytest.raises(ProtocolError):
        c.send(R.AUTH_OK)


def test_already_authenticated_session_cannot_auth_again() -> None:
    c = greeted()
    drive(c, b"EHLO a\r\n")
    c.session.auth_user = "joe@example.org"
    seen, out = drive(c, b"AUTH PLAIN\r\n")
    assert isinstance(seen[0], BadInput) and b"Already authenticated" in out


def test_unknown_and_unimplemented_commands() -> None:
    c = greeted()
    seen, out = drive(c, b"FOO bar\r\nEXPN list\r\n\r\n")
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"500 5.5.1") and lines[1].startswith(b"502 5.5.1")
    assert lines[2].startswith(b"500 5.5.1")


def test_errors_are_counted_for_the_hang_up_limit() -> None:
    c = greeted()
    drive(c, b"BOGUS\r\n" * MAX_ERRORS)
    assert c.too_many_errors


def test_every_transition_names_known_outcomes_and_states() -> None:
    for (state, event), outcomes in TRANSITIONS.items():
        assert isinstance(state, State) and issubclass(event, Event)
        assert set(outcomes) <= {"ok", "more", "fail"}
        assert all(isinstance(s, State) for s in outcomes.values())


@given(st.lists(st.sampled_from([
    b"EHLO a\r\n", b"HELO b\r\n", b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n",
    b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n",
    b".\r\n", b"\r\n", b"\n.\n", b"x" * 700, b"\r", b"\n", b"QUIT\r\n", b"VRFY x\r\n",
    b"MAIL FROM:<>\r\n", b"RCPT TO:<\r\n", b"\x00\xff", b"body line\r\n",
]), max_size=40), st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_input_is_answered_without_crashing(parts: list[bytes], noise: bytes) -> None:
    c = greeted()
    for part in parts + [noise]:
        if c.state is State.TLS_STARTING:
            c.tls_started()
        if c.state is State.CLOSED:
            break
        seen, out = drive(c, part)
        replies_needed = [e for e in seen if not isinstance(e, (DataChunk, ConnectionClosed))]
        assert out.count(b"\r\n") >= len(replies_needed)
    c.receive_data(b"")
    if c.state is State.TLS_STARTING:
        c.tls_started()
    seen, _ = drive(c)
    assert c.state is State.CLOSED
