"""The hard limits against bad input (issue 3, point 5), against the running smtp service."""

from __future__ import annotations

import random
import socket
import ssl
import time

from smtp_helpers import JOE, RawClient, change, leftovers, queue_entries, wait_until

from mailyard.home import Home


def session(node: Home, source: str = "127.0.0.1") -> RawClient:
    c = RawClient(node.port("smtp"), source=source)
    assert c.code() == 220
    c.send(b"EHLO client.test\r\n")
    assert c.code() == 250
    return c


def open_transaction(c: RawClient, rcpt: bytes = JOE.encode()) -> None:
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n")
    assert (c.code(), c.code(), c.code()) == (250, 250, 354)


def test_command_line_over_512_octets_gets_500_and_no_crash(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = session(node)
    c.send(b"NOOP " + b"x" * 600 + b"\r\n")
    assert c.reply().startswith(b"500 5.5.2 Line too long")
    c.send(b"MAIL FROM:<" + b"a" * 2_000_000 + b"@remote.test>\r\n")  # 2 MB in one line
    assert c.reply().startswith(b"500 5.5.2 Line too long")
    c.send(b"NOOP " + b"y" * 505 + b"\r\n")  # exactly 512 octets with CRLF
    assert c.code() == 250
    c.close()
    c2 = session(node)  # the service still serves
    c2.send(b"QUIT\r\n")
    assert c2.code() == 221
    svc.wait_log("rule=LINE_TOO_LONG")
def test_text_lines_over_1000_octets_are_refused_at_end_of_data(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = session(node)
    open_transaction(c)
    c.send(b"Subject: long\r\n\r\n" + b"z" * 999 + b"\r\n.\r\n")  # 1001 octets with CRLF
    reply = c.reply()
    assert reply.startswith(b"554 5.6.0 Message refused: a text line is longer than 1000")
    assert leftovers(node) == []
    open_transaction(c)
    c.send(b"Subject: fits\r\n\r\n" + b"z" * 998 + b"\r\n.\r\n")  # exactly 1000
    assert c.code() == 250
    c.close()
    [(_, data)] = queue_entries(node)
    assert data.endswith(b"z" * 998 + b"\r\n")
    svc.wait_log("rule=LONG_TEXT_LINE")
def test_at_most_100_recipients_then_452(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")  # from loopback, a relay network: remote recipients are fine
    c = session(node)
    c.send(b"MAIL FROM:<a@remote.test>\r\n" + b"".join(
        f"RCPT TO:<user{i}@remote.test>\r\n".encode() for i in range(105)))
    assert c.code() == 250
    codes = [c.code() for _ in range(105)]
    assert codes[:100] == [250] * 100
    assert all(code == 452 for code in codes[100:])
    c.send(b"DATA\r\n")
    assert c.code() == 354
    c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n")
    assert c.code() == 250
    [(envelope, _)] = queue_entries(node)
    assert len(envelope["recipients"]) == 100


def test_smtp_smuggling_cannot_end_data_early(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    c = session(node)
    open_transaction(c)
    smuggled = (b"From: a@remote.test\r\nSubject: real\r\n\r\nreal body\r\n"
                b"\n.\nMAIL FROM:<admin@example.org>\nRCPT TO:<joe@example.org>\nDATA\n"
                b"Subject: smuggled LF\n\nx\n"
                b"\r.\rMAIL FROM:<admin@example.org>\r\n"
                b"\n.\r\nMAIL FROM:<admin@example.org>\r\n"
                b"\r\n.\nMAIL FROM:<admin@example.org>\r\n"
                b"end\r\n.\r\n")
    c.send(smuggled)
    assert c.code() == 250  # exactly one reply for the one message
    c.send(b"NOOP\r\n")
    assert c.code() == 250  # and nothing else was taken for a command
    [(envelope, data)] = queue_entries(node)
    assert envelope["sender"] == "a@remote.test"
    assert b"Subject: smuggled LF" in data and data.endswith(b"end\r\n")


def test_commands_pipelined_before_starttls_are_discarded(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = session(node)
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<joe@example.org>\r\n")
    assert c.reply() == b"220 2.0.0 Ready to start TLS"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(c.sock, server_hostname="localhost")
    c.sock = tls
    c.buf = b""
    c.send(b"EHLO client.test\r\n")
    ehlo = c.reply()
    assert ehlo.startswith(b"250-") and b"STARTTLS" not in ehlo
    c.send(b"RCPT TO:<joe@example.org>\r\n")
    reply = c.reply()
    assert reply.startswith(b"503 5.5.1 Need MAIL before RCPT"), reply  # the MAIL was dropped
    c.send(b"QUIT\r\n")
    assert c.code() == 221
    svc.wait_log("end ip=")  # every line of the session is in the log
    assert "evil@attacker.test" not in svc.log()


def test_cr_or_lf_inside_addresses_is_refused(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    start("smtp")
    c = session(node)
    c.send(b"MAIL FROM:<a@remote.test>\nRCPT TO:<joe@example.org>\r\n")
    assert c.reply().startswith(b"500 5.5.2 Command line contains a bare CR or LF")
    c.send(b"MAIL FROM:<a@remote.test\r>\r\n")
    assert c.reply().startswith(b"500 5.5.2")
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<joe@example.org\rData: x>\r\n")
    assert c.code() == 250
    assert c.reply().startswith(b"500 5.5.2")
    c.send(b"DATA\r\n")
    assert c.reply().startswith(b"503 5.5.1 Need RCPT")
    c.close()
    assert queue_entries(node) == []


def test_garbage_gets_the_connection_closed_and_leaves_nothing(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    rng = random.Random(3)
    c = RawClient(node.port("smtp"))
    assert c.code() == 220
    garbage = bytes(rng.randrange(256) for _ in range(200_000))
    try:
        c.send(garbage + b"\r\n" * 50)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may hang up while we are still sending
    wait_until(lambda: "too-many-errors" in svc.log(), what="the server to give up")
    rest = c.read_to_end()  # the server hangs up: this returns instead of timing out
    assert b"500 5.5" in rest or rest == b""  # (a reset may swallow the replies)
    c.close()
    c2 = session(node)
    c2.send(b"QUIT\r\n")
    assert c2.code() == 221
    assert leftovers(node) == []


def test_disconnect_in_the_middle_of_data_leaves_nothing(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    svc = start("smtp")
    c = session(node)
    open_transaction(c)
    c.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 20_000)  # 280 kB, then gone
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    wait_until(lambda: "cut-off" in svc.log(), what="the server to notice")
    wait_until(lambda: "end ip=" in svc.log(), what="the session to end")
    assert leftovers(node) == []


def test_a_stalled_client_is_timed_out_and_leaves_nothing(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.timeout": 10})  # the smallest the registry allows
    svc = start("smtp")
    c = session(node)
    open_transaction(c)
    c.send(b"Subject: stalled\r\n\r\nhalf a mess")
    started = time.monotonic()
    reply = c.reply()  # blocks until the server gives up (socket timeout 30 s)
    assert reply.startswith(b"421 4.4.2 mx.example.test timeout exceeded")
    assert time.monotonic() - started >= 9  # not before the timeout
    assert c.closed()
    wait_until(lambda: "end ip=" in svc.log(), what="the session to end")
    assert leftovers(node) == []
    svc.wait_log("timeout ip=127.0.0.1 after=10s state=data")
def test_data_from_a_client_keeps_a_session_alive(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.timeout": 10})
    start("smtp")
    c = session(node)
    open_transaction(c)
    c.send(b"Subject: slow\r\n\r\n")
    for _ in range(3):  # 12 s in all, never 10 s of silence
        time.sleep(4)
        c.send(b"still here\r\n")
    c.send(b".\r\n")
    assert c.code() == 250
    assert len(queue_entries(node)) == 1
