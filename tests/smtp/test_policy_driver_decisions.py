"""The decisions the SMTP driver used to make itself, now plain functions of `policy`."""

from __future__ import annotations

import errno

from mailyard.address import parse_path_argument
from mailyard.filters.policy import (
    spam_reply,
    virus_reply,
    virus_too_big_reply,
    virus_unavailable_reply,
)
from mailyard.settings.registry import defaults
from mailyard.smtp import policy as P
from mailyard.smtp.protocol import Session


def make_policy(**changes: object) -> P.Policy:
    settings = defaults()
    settings.update({"server.hostname": "mx.example.test", "server.default_domain": "example.org"})
    settings.update(changes)
    return P.Policy.from_settings(settings, "smtp")


def test_recipients_are_deduplicated_without_regard_to_case_in_order() -> None:
    paths = [parse_path_argument(t)[0] for t in
             ("<Joe@Example.org>", "<ann@example.org>", "<joe@example.org>", '<"ann"@example.org>')]
    assert P.unique_recipients(paths) == ["Joe@example.org", "ann@example.org"]


def test_auth_user_names_are_trimmed_and_lower_case() -> None:
    assert P.auth_username("  Joe@Example.ORG ") == "joe@example.org"


def test_rset_noop_help_vrfy_replies() -> None:
    assert P.simple_reply("RSET").code == 250
    assert P.simple_reply("NOOP").code == 250
    assert P.simple_reply("HELP").code == 214
    assert P.simple_reply("VRFY").code == 252  # never says whether the mailbox exists


def test_starttls_needs_a_certificate_and_the_mode() -> None:
    policy = make_policy(**{"smtp.auth_mode": "auth_optional/tls_optional"})
    assert P.starttls_decision(policy, Session("192.0.2.1"), True).code == 220
    assert P.starttls_decision(policy, Session("192.0.2.1"), False).name == "TLS_NOT_AVAILABLE"
    assert P.starttls_decision(policy, Session("192.0.2.1", tls=True), True).code == 502
    off = make_policy(**{"smtp.auth_mode": "auth_no/tls_no"})
    assert P.starttls_decision(off, Session("192.0.2.1"), True).code == 502


def test_queue_failures_are_temporary_and_a_full_disk_says_so() -> None:
    assert P.queue_failure_reply(OSError(errno.ENOSPC, "full")).name == "QUEUE_FULL"
    assert P.queue_failure_reply(OSError(errno.EDQUOT, "quota")).name == "QUEUE_FULL"
    assert P.queue_failure_reply(OSError(errno.EIO, "io")).name == "QUEUE_ERROR"
    assert P.queue_failure_reply(None).code == 451


def test_each_filter_verdict_is_a_named_rule_of_the_reply_table() -> None:
    assert (virus_reply("Eicar").code, virus_reply("Eicar").name) == (554, "VIRUS_FOUND")
    assert virus_unavailable_reply().name == "VIRUS_SCANNER_UNAVAILABLE"
    assert virus_too_big_reply().name == "VIRUS_TOO_BIG_TO_SCAN"
    spam = spam_reply(12.0, 10.0)
    assert spam is not None and spam.name == "SPAM_REFUSED"


def test_one_client_may_hold_half_the_slots_unless_it_is_a_relay_network() -> None:
    policy = make_policy(**{"smtp.max_connections": 20, "smtp.relay_networks": ["10.0.0.0/8"]})
    assert P.client_connection_cap(policy) == 10
    outsider = Session("192.0.2.1")
    assert P.client_connection_refused(policy, outsider, 10) is None
    refused = P.client_connection_refused(policy, outsider, 11)
    assert refused is not None and refused.name == "TOO_MANY_FROM_CLIENT" and refused.code == 421
    assert P.client_connection_refused(policy, Session("10.1.2.3"), 11) is None  # exempt
    assert P.client_connection_refused(policy, outsider, 0) is None  # not tracked: service cap
    assert P.client_connection_cap(make_policy(**{"smtp.max_connections": 1})) == 1
