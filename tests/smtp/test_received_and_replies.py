"""The Received header, the reply table's wire format, and queue failures mapped to replies."""

from __future__ import annotations

import email.utils
import errno

from mailyard.queue import QueueError
from mailyard.smtp import replies as R
from mailyard.smtp.policy import queue_failure_reply
from mailyard.smtp.received import received_header


def test_received_header_names_client_server_and_protocol() -> None:
    header = received_header(helo="client.test", client_ip="192.0.2.1",
                             hostname="mx.example.test", protocol="ESMTPS",
                             recipient="joe@example.org", now=0)
    text = header.decode()
    assert text.startswith("Received: from client.test ([192.0.2.1])\r\n"
                           "\tby mx.example.test (mailyard) with ESMTPS\r\n"
                           "\tfor <joe@example.org>;\r\n\t")
    date = text.rsplit("\t", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date).timestamp() == 0
    assert text.count("\r\n") == 4


def test_received_header_hides_recipients_of_a_shared_message_and_cleans_helo() -> None:
    header = received_header(helo="evil(comment)\tname;x", client_ip="192.0.2.1",
                             hostname="mx", protocol="ESMTP", recipient=None)
    assert b"for <" not in header
    assert b"from evil?comment??name?x ([192.0.2.1])" in header


def test_multiline_replies_and_empty_challenges_on_the_wire() -> None:
    ehlo = R.EHLO_OK.format(lines="mx.test\nPIPELINING\nSIZE 10")
    assert bytes(ehlo) == b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    assert bytes(R.AUTH_CHALLENGE.format(challenge="")) == b"334 \r\n"
    assert bytes(R.RELAY_DENIED.format(address="<a@b>")) == (
        b"554 5.7.1 <a@b>: relay access denied\r\n")
    assert R.RELAY_DENIED.name == "RELAY_DENIED"


def test_every_reply_has_a_name_and_a_valid_code() -> None:
    table = [v for v in vars(R).values() if isinstance(v, R.Reply)]
    assert len(table) > 40
    for reply in table:
        assert reply.name and 200 <= reply.code <= 599
        if reply.status:
            assert reply.status[0] == str(reply.code)[0], reply.name


def test_full_disk_is_452_other_queue_failures_451() -> None:
    full = QueueError("queue: cannot write the message: No space left on device")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    reply = queue_failure_reply(full.__cause__)
    assert (reply.code, reply.status) == (452, "4.3.1")
    other = QueueError("queue: cannot write the message: Permission denied")
    other.__cause__ = OSError(errno.EACCES, "Permission denied")
    reply = queue_failure_reply(other.__cause__)
    assert (reply.code, reply.status) == (451, "4.3.0")
