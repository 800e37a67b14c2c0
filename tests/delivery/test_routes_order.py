"""SMTP routes chosen as qmail-remote chooses them, by their effect: which of two relays the
running send service hands a message to when a `:` wildcard line comes first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from send_harness import SendService, SmtpSink, inject, queue_empty, start_sink, wait_until

from mailyard.home import Home
from mailyard.store.settings_store import set_setting


@pytest.fixture
def wildcard_sink() -> Iterator[SmtpSink]:
    s, stop = start_sink()
    yield s
    stop()


def test_a_specific_route_wins_over_a_wildcard_written_before_it(
        mail_home: Home, send_service: SendService, sink: SmtpSink,
        wildcard_sink: SmtpSink) -> None:
    set_setting(mail_home, "send.smtp_routes", [
        f":{wildcard_sink.host}:{wildcard_sink.port}",        # first, as the example
        f".far.test:{sink.host}:{sink.port}",                 # subdomains of far.test
    ])
    send_service.start()
    inject(mail_home, ["bob@mx.far.test"], subject="to a subdomain")
    inject(mail_home, ["carl@elsewhere.test"], subject="to anywhere else")
    wait_until(lambda: queue_empty(mail_home), what="both messages delivered")
    assert [m.recipients for m in sink.messages] == [["bob@mx.far.test"]]
    assert [m.recipients for m in wildcard_sink.messages] == [["carl@elsewhere.test"]]
