"""Remote delivery by the send service: SMTP routes, MX lookup, STARTTLS, deferrals and
failures, against SMTP sinks and a DNS server on loopback."""

from __future__ import annotations

import random
import signal
import ssl
from collections.abc import Iterator

import pytest
from send_harness import (
    DnsServer,
    SendService,
    SmtpSink,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    start_sink,
    wait_until,
)

from mailyard.home import Home
from mailyard.queue import Queue
from mailyard.store.settings_store import set_setting


def _route_to(home: Home, sink: SmtpSink, pattern: str = "") -> None:
    set_setting(home, "send.smtp_routes", [f"{pattern}:{sink.host}:{sink.port}"])


def _loopback_address() -> str:
    """A loopback address of its own, so that a sink can listen on the real port 25."""
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


@pytest.fixture
def port25_sinks() -> Iterator[list[SmtpSink]]:
    made: list = []

    def make(**kw: object) -> SmtpSink:
        for _ in range(20):
            try:
                s, stop = start_sink(_loopback_address(), 25, **kw)
            except AssertionError:
                continue
            made.append(stop)
            return s
        raise RuntimeError("no loopback address free for port 25")

    holder: list = [make]
    yield holder
    for stop in made:
        stop()


def test_smtp_route_delivers_to_the_relay(mail_home: Home, send_service: SendService,
                                          sink: SmtpSink) -> None:
    _route_to(mail_home, sink)
    send_service.start()
    body = (b"From: alice@remote.test\r\nTo: bob@far.test\r\nSubject: routed\r\n\r\n"
            b"line one\r\n.leading dot\r\n..two dots\r\nlast line without ending")
    qid = inject(mail_home, ["bob@far.test"], body=body)
    wait_until(lambda: sink.messages, what="the sink to receive the message")
    got = sink.messages[0]
    assert got.sender == "alice@remote.test" and got.recipients == ["bob@far.test"]
    assert got.data == (b"From: alice@remote.test\r\nTo: bob@far.test\r\nSubject: routed\r\n\r\n"
                        b"line one\r\n.leading dot\r\n..two dots\r\n"
                        b"last line without ending\r\n")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    start = next(line for line in log if line.startswith("starting delivery"))
    assert start.endswith(f"msg {qid} to remote bob@far.test")
    number = start.split()[2].rstrip(":")
    assert (f"delivery {number}: success: 127.0.0.1_accepted_message./"
            "Remote_host_said:_250_2.0.0_queued_as_1/TLS:_none/") in log


def test_route_for_one_domain_only_leaves_others_to_mx(mail_home: Home,
                                                       send_service: SendService,
                                                       sink: SmtpSink,
                                                       dns_server: DnsServer) -> None:
    set_setting(mail_home, "smtp.dns_resolver", dns_server.setting)
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}"])
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    inject(mail_home, ["carl@sub.far.test"], sender="joe@example.test")
    wait_until(lambda: sink.messages, what="routed delivery")
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="bounce for NXDOMAIN")[0]
    assert b"Final-Recipient: rfc822; carl@sub.far.test" in bounce
    assert b"Status: 5.1.2" in bounce
    assert [m.recipients for m in sink.messages] == [["bob@far.test"]]


def test_mx_lookup_in_preference_order_with_fallback(mail_home: Home, send_service: SendService,
                                                     dns_server: DnsServer,
                                                     port25_sinks: list) -> None:
    good = port25_sinks[0]()
    dead = _loopback_address()  # nothing listens there: connection refused
    dns_server.add("far.test", "MX", "5 dead.far.test.", "10 good.far.test.")
    dns_server.add("dead.far.test", "A", dead)
    dns_server.add("good.far.test", "A", good.host)
    set_setting(mail_home, "smtp.dns_resolver", dns_server.setting)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: good.messages, what="delivery through the second MX")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    assert any(line.endswith(f"success: {good.host}_accepted_message./"
                             "Remote_host_said:_250_2.0.0_queued_as_1/TLS:_none/")
               for line in read_send_log(mail_home))


def test_domain_without_mx_is_delivered_to_its_address(mail_home: Home,
                                                       send_service: SendService,
                                                       dns_server: DnsServer,
                                                       port25_sinks: list) -> None:
    target = port25_sinks[0]()
    dns_server.add("plain.test", "A", target.host)
    set_setting(mail_home, "smtp.dns_resolver", dns_server.setting)
    send_service.start()
    inject(mail_home, ["bob@plain.test"])
    wait_until(lambda: target.messages, what="delivery to the A record")


def test_null_mx_bounces_at_once(mail_home: Home, send_service: SendService,
                                 dns_server: DnsServer) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    set_setting(mail_home, "smtp.dns_resolver", dns_server.setting)
    send_service.start()
    inject(mail_home, ["bob@nomail.test"], sender="joe@example.test")
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="bounce")[0]
    assert b"Status: 5.1.10" in bounce and b"null MX" in bounce
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def test_opportunistic_starttls_is_used_when_offered(mail_home: Home, send_service: SendService,
                                                     tmp_path) -> None:
    from mailyard.services.tls import make_self_signed

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(cert, key, "sink.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    tls_sink, stop = start_sink(starttls_context=ctx)
    try:
        _route_to(mail_home, tls_sink)
        send_service.start()
        inject(mail_home, ["bob@far.test"])
        wait_until(lambda: tls_sink.messages, what="delivery over TLS")
        assert tls_sink.messages[0].tls is True
    finally:
        stop()


def test_permanent_rcpt_failure_bounces_with_the_remote_reply(mail_home: Home,
                                                              send_service: SendService,
                                                              sink: SmtpSink) -> None:
    sink.replies["gone@far.test"] = "550 5.1.1 gone: no such user"
    _route_to(mail_home, sink)
    send_service.start()
    inject(mail_home, ["gone@far.test", "bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="bounce")[0]
    assert b"Final-Recipient: rfc822; gone@far.test" in bounce
    assert b"Diagnostic-Code: smtp; 550 5.1.1 gone: no such user" in bounce
    assert b"Remote-MTA: dns; 127.0.0.1" in bounce
    assert b"bob@far.test" not in bounce.split(b"Content-Type: message/delivery-status")[1] \
        .split(b"text/rfc822-headers")[0]
    assert [m.recipients for m in sink.messages] == [["bob@far.test"]]
    log = read_send_log(mail_home)
    assert any(line.endswith(": failure: 127.0.0.1_does_not_like_recipient./Remote_host_said:"
                             "_550_5.1.1_gone:_no_such_user/Giving_up_on_127.0.0.1./")
               for line in log)


def test_temporary_failure_defers_and_process_now_retries(mail_home: Home,
                                                          send_service: SendService,
                                                          sink: SmtpSink) -> None:
    from mailyard.queue import admin

    sink.default_rcpt_reply = "451 4.3.0 try later"
    _route_to(mail_home, sink)
    send_service.start()
    qid = inject(mail_home, ["bob@far.test"])
    wait_until(lambda: any(": deferral: " in line for line in read_send_log(mail_home)),
               what="a deferral")
    assert Queue(mail_home.queue_dir).counts()["remote"] == 1
    send_service.signal(signal.SIGUSR1)  # due now, not in 400 s
    wait_until(lambda: sum(": deferral: " in line for line in read_send_log(mail_home)) == 2,
               what="a second attempt after SIGUSR1")
    listed = admin.list_messages(mail_home, "remote")
    assert [m.id for m in listed] == [qid] and listed[0].status == "remote"
    sink.default_rcpt_reply = "250 ok"
    result = admin.process(mail_home)
    assert result["service_running"] and result["done"]
    wait_until(lambda: sink.messages, what="delivery after Process Mail Queue")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def test_queue_lifetime_turns_deferral_into_bounce(mail_home: Home, send_service: SendService,
                                                   sink: SmtpSink) -> None:
    sink.default_rcpt_reply = "421 4.7.0 come back later"
    _route_to(mail_home, sink)
    set_setting(mail_home, "send.queue_lifetime", 2)
    send_service.start()
    inject(mail_home, ["bob@far.test"], sender="joe@example.test")
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="bounce after lifetime")[0]
    assert b"in the queue too long" in bounce and b"Status: 4.4.7" in bounce
    log = read_send_log(mail_home)
    results = [line for line in log if line.startswith("delivery ")]
    assert ": deferral: " in results[0]
    assert any(": failure: " in r and r.endswith("I'm_not_going_to_try_again;_this_message_has"
                                                 "_been_in_the_queue_too_long./")
               for r in results)
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")


def test_unreachable_host_is_a_deferral(mail_home: Home, send_service: SendService) -> None:
    set_setting(mail_home, "send.smtp_routes", [f":{_loopback_address()}:2"])
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: "delivery 1: deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_"
               "connection._(#4.4.1)/" in read_send_log(mail_home), what="deferral")
    assert Queue(mail_home.queue_dir).counts()["remote"] == 1


def test_silent_server_is_a_deferral_after_the_response_timeout(mail_home: Home,
                                                                send_service: SendService,
                                                                sink: SmtpSink) -> None:
    sink.greeting_delay = 3600
    _route_to(mail_home, sink)
    set_setting(mail_home, "send.response_timeout", 1)
    send_service.start()
    inject(mail_home, ["bob@far.test"])
    wait_until(lambda: "delivery 1: deferral: Connected_to_127.0.0.1_but_connection_died."
               "_(#4.4.2)/" in read_send_log(mail_home), what="the deferral")


def test_outbound_connections_stay_within_the_limit(mail_home: Home, send_service: SendService,
                                                    sink: SmtpSink) -> None:
    sink.data_delay = 0.3
    _route_to(mail_home, sink)
    set_setting(mail_home, "send.max_connections", 2)
    for n in range(6):
        inject(mail_home, [f"user{n}@far.test"])
    send_service.start()
    wait_until(lambda: len(sink.messages) == 6 and queue_empty(mail_home), what="6 deliveries")
    remote = [int(line.split("remote ")[1].split("/")[0]) for line in read_send_log(mail_home)
              if line.startswith("status:")]
    assert max(remote) == 2
    assert all(line.endswith("remote 0/2") or "/2" in line
               for line in read_send_log(mail_home) if line.startswith("status:"))


def test_connection_that_does_not_open_is_a_deferral_after_the_connect_timeout(
        mail_home: Home, send_service: SendService) -> None:
    import socket

    # A listener whose accept queue is full and never emptied: the kernel drops further
    # SYNs, so a connection attempt hangs as one to a dead host does.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        set_setting(mail_home, "send.smtp_routes", [f":127.0.0.1:{port}"])
        set_setting(mail_home, "send.connect_timeout", 1)
        send_service.start()
        inject(mail_home, ["bob@far.test"])
        wait_until(lambda: "delivery 1: deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_"
                   "connection._(#4.4.1)/" in read_send_log(mail_home), what="the deferral")
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_recipients_of_one_destination_share_one_transaction(mail_home: Home,
                                                             send_service: SendService,
                                                             sink: SmtpSink) -> None:
    sink.replies["gone@far.test"] = "550 5.1.1 gone"
    set_setting(mail_home, "send.smtp_routes", [f"far.test:{sink.host}:{sink.port}",
                                                f"near.test:{sink.host}:{sink.port}"])
    send_service.start()
    inject(mail_home, ["a@far.test", "gone@far.test", "b@far.test", "c@near.test"],
           sender="joe@example.test")
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    # Both domains are routed to the same relay: one next hop, so one transaction.
    assert [m.recipients for m in sink.messages] == [["a@far.test", "b@far.test",
                                                      "c@near.test"]]
    assert sink.connections == 1
    log = read_send_log(mail_home)
    assert sum(line.startswith("starting delivery ") and " to remote " in line
               for line in log) == 4
    results = [line for line in log if line.startswith("delivery ")]
    assert sum(": success: 127.0.0.1_accepted_message." in line for line in results) == 3
    assert sum(": failure: 127.0.0.1_does_not_like_recipient." in line for line in results) == 1
    bounce = wait_until(lambda: [m for m in maildir_messages(mail_home, "joe@example.test")
                                 if b"multipart/report" in m], what="bounce")[0]
    assert b"Final-Recipient: rfc822; gone@far.test" in bounce
