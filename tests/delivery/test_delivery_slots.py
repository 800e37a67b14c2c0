"""Outbound slots (issue 16 item 8, the outbound part): a reply is bounded as a whole by the
response timeout, and one slow destination cannot take every outbound connection."""

from __future__ import annotations

import threading

from send_harness import (
    SendService,
    SmtpSink,
    inject,
    read_send_log,
    start_sink,
    wait_until,
)

from mailyard.home import Home
from mailyard.store.settings_store import set_setting


def test_a_reply_dribbled_line_by_line_is_cut_off_by_the_response_timeout(
        mail_home: Home, send_service: SendService) -> None:
    # Each greeting line comes within the timeout; the whole greeting does not.
    slow, stop = start_sink(greeting_lines=8, line_delay=0.5)
    try:
        set_setting(mail_home, "send.response_timeout", 1)
        set_setting(mail_home, "send.smtp_routes", [f"far.test:{slow.host}:{slow.port}"])
        send_service.start()
        inject(mail_home, ["bob@far.test"])
        first = wait_until(lambda: [line for line in read_send_log(mail_home)
                                    if line.startswith("delivery 1: ")],
                           what="the first delivery's result")[0]
        assert first.startswith("delivery 1: deferral: Connected_to_127.0.0.1_but_connection"
                                "_died.")
        assert slow.messages == []
    finally:
        stop()


def test_one_slow_destination_does_not_take_every_slot(mail_home: Home,
                                                       send_service: SendService,
                                                       sink: SmtpSink) -> None:
    gate = threading.Event()
    stuck, stop = start_sink(hold=gate)
    try:
        set_setting(mail_home, "send.max_connections", 3)
        set_setting(mail_home, "send.destination_concurrency", 1)
        set_setting(mail_home, "send.smtp_routes", [f"slow.test:{stuck.host}:{stuck.port}",
                                                    f"fast.test:{sink.host}:{sink.port}"])
        send_service.start()
        for n in range(3):
            inject(mail_home, [f"user{n}@slow.test"])
        wait_until(lambda: stuck.open_sessions >= 1, what="a session to the slow server")
        inject(mail_home, ["bob@fast.test"])
        wait_until(lambda: sink.messages, what="delivery to the other destination")
        assert stuck.most_open == 1
        gate.set()
        wait_until(lambda: len(stuck.messages) == 3, what="the slow destination's mail")
        assert stuck.most_open == 1
    finally:
        gate.set()
        stop()
