"""Every SMTP policy decision as a plain function of (settings, session, input): no network."""

from __future__ import annotations

from typing import Any

import pytest

from mailyard.address import Path, parse_path_argument
from mailyard.settings.registry import AUTH_MODES, defaults
from mailyard.smtp import replies as R
from mailyard.smtp.policy import (
    AUTH_FAILURE_DELAY,
    AUTH_FAILURE_DELAY_MAX,
    AUTH_FAILURE_MEMORY,
    MAX_RECEIVED_HEADERS,
    MAX_RECIPIENTS,
    AuthThrottle,
    Policy,
    auth_start_refusal,
    blacklist_match,
    connection_refused,
    ehlo_reply,
    mail_from,
    message_refusal,
    offers_auth,
    offers_starttls,
    postmaster_reply,
    postmaster_target,
    protocol_name,
    rbl_applies,
    rcpt_precheck,
    rcpt_to,
    routing_trick,
    sender_check_needed,
    sender_login_refusal,
)
from mailyard.smtp.protocol import Session


def make_policy(service: str = "smtp", **changes: Any) -> Policy:
    settings = defaults()
    settings.update({"server.hostname": "mx.example.test", "server.default_domain": "example.org"})
    settings.update(changes)
    return Policy.from_settings(settings, service)


def path(text: str) -> Path:
    return parse_path_argument(text)[0]


OUTSIDER = "198.51.100.7"  # not in the default relay networks (loopback)


def outsider(**kw: Any) -> Session:
    return Session(client_ip=OUTSIDER, **kw)


# ---- authentication modes ------------------------------------------------------------------------

# mode -> (STARTTLS offered in clear, AUTH offered in clear, AUTH offered after TLS)
MODE_TABLE = {
    "auth_no/tls_no": (False, False, False),
    "auth_no/tls_optional": (True, False, False),
    "auth_optional/tls_no": (False, True, True),
    "auth_optional/tls_optional": (True, True, True),
    "auth_withtls/tls_optional": (True, False, True),
    "auth_required/tls_required": (True, False, True),
}


def test_mode_table_covers_every_mode_of_the_registry() -> None:
    assert set(MODE_TABLE) == {value for value, _ in AUTH_MODES}


@pytest.mark.parametrize("mode", sorted(MODE_TABLE))
def test_what_each_auth_mode_offers(mode: str) -> None:
    starttls, auth_clear, auth_tls = MODE_TABLE[mode]
    policy = make_policy("submission", **{"submission.auth_mode": mode})
    clear, secure = outsider(), outsider(tls=True)
    assert offers_starttls(policy, clear) is starttls
    assert offers_auth(policy, clear) is auth_clear
    assert offers_auth(policy, secure) is auth_tls
    assert not offers_starttls(policy, secure)
    ehlo = bytes(ehlo_reply(policy, clear))
    assert (b"AUTH PLAIN LOGIN" in ehlo) is auth_clear
    assert (b"STARTTLS" in ehlo) is starttls
    if not auth_clear:
        assert auth_start_refusal(policy, clear, "PLAIN") is not None


def test_auth_before_tls_where_tls_is_needed_gets_538() -> None:
    policy = make_policy("submission")
    assert auth_start_refusal(policy, outsider(), "PLAIN") == R.AUTH_NEEDS_TLS
    assert auth_start_refusal(policy, outsider(tls=True), "PLAIN") is None
    assert auth_start_refusal(policy, outsider(tls=True), "CRAM-MD5").code == 504


def test_required_mode_refuses_mail_without_tls_then_without_auth() -> None:
    policy = make_policy("submission")
    sender = path("<joe@example.org>")
    assert mail_from(policy, outsider(), sender, {})[0] == R.TLS_REQUIRED
    assert mail_from(policy, outsider(tls=True), sender, {})[0] == R.AUTH_REQUIRED
    reply, accepted = mail_from(policy, outsider(tls=True, auth_user="joe@example.org"),
                                sender, {})
    assert reply == R.SENDER_OK and accepted == sender


def test_without_a_certificate_tls_and_tls_only_auth_are_not_offered() -> None:
    settings = defaults()
    settings["submission.auth_mode"] = "auth_withtls/tls_optional"
    policy = Policy.from_settings(settings, "submission", tls_available=False)
    assert not offers_starttls(policy, outsider())
    assert b"STARTTLS" not in bytes(ehlo_reply(policy, outsider()))


# ---- MAIL FROM ----------------------------------------------------------------------------------


def test_size_is_announced_and_enforced_at_mail_from() -> None:
    policy = make_policy(**{"smtp.message_size_mb": 1})
    assert b"SIZE 1048576" in bytes(ehlo_reply(policy, outsider()))
    assert mail_from(policy, outsider(), path("<a@x.test>"), {"SIZE": "1048577"})[0].code == 552
    assert mail_from(policy, outsider(), path("<a@x.test>"), {"SIZE": "1048576"})[0].code == 250
    unlimited = make_policy(**{"smtp.message_size_mb": 0})
    assert b"SIZE\r\n" in bytes(ehlo_reply(unlimited, outsider()))
    assert mail_from(unlimited, outsider(), path("<a@x.test>"), {"SIZE": "9" * 12})[0].code == 250


@pytest.mark.parametrize("params, code", [
    ({"BODY": "8BITMIME"}, 250), ({"BODY": "7BIT"}, 250), ({"BODY": "BINARYMIME"}, 501),
    ({"SIZE": "abc"}, 501), ({"AUTH": "<>"}, 250), ({"SMTPUTF8": None}, 555),
    ({"RET": "HDRS"}, 555),
])
def test_mail_parameters(params: dict[str, str | None], code: int) -> None:
    assert mail_from(make_policy(), outsider(), path("<a@x.test>"), params)[0].code == code


def test_bare_sender_gets_the_default_domain_only_for_local_users() -> None:
    policy = make_policy()
    reply, accepted = mail_from(policy, Session(client_ip="127.0.0.1"), path("<fred>"), {})
    assert reply.code == 250 and accepted is not None and accepted.address == "fred@example.org"
    reply, accepted = mail_from(policy, outsider(), path("<fred>"), {})
    assert reply.code == 501 and accepted is None


def test_sender_source_route_is_ignored_and_double_at_refused() -> None:
    policy = make_policy()
    reply, accepted = mail_from(policy, outsider(), path("<@relay.test:a@x.test>"), {})
    assert reply.code == 250 and accepted is not None and accepted.address == "a@x.test"
    assert mail_from(policy, outsider(), path("<a@b@x.test>"), {})[0].code == 501


def test_inbound_blacklist_refuses_senders_and_recipients_with_553() -> None:
    policy = make_policy(**{"smtp.inbound_blacklist": ["spammer@bad.test", "@worse.test",
                                                       r"@.*\.junk\.test$"]})
    for addr in ("spammer@bad.test", "SPAMMER@Bad.Test", "x@worse.test", "y@mail.junk.test"):
        reply, _ = mail_from(policy, outsider(), path(f"<{addr}>"), {})
        assert reply == R.INBOUND_BLACKLIST.format(address=f"<{path(f'<{addr}>').address}>"), addr
        refused = rcpt_precheck(policy, outsider(), path(f"<{addr}>"), {})
        assert isinstance(refused, R.Reply) and refused.code == 553
    assert mail_from(policy, outsider(), path("<other@bad.test>"), {})[0].code == 250
    assert mail_from(policy, outsider(), path("<x@sub.worse.test>"), {})[0].code == 250
    assert mail_from(policy, outsider(), path("<>"), {})[0].code == 250


@pytest.mark.parametrize("pattern, address, hit", [
    ("joe@x.test", "joe@x.test", True), ("joe@x.test", "joe2@x.test", False),
    ("@x.test", "a@x.test", True), ("@x.test", "a@y.x.test", False),
    ("*@x.test", "a@x.test", True), ("joe@x.test", "xjoe@x.test", False),
    ("^sales[0-9]@", "sales1@any.test", True), ("^sales[0-9]@", "sales@any.test", False),
    (".*", "anything@at.all", True), ("!@", "anything@at.all", False),
])
def test_blacklist_patterns(pattern: str, address: str, hit: bool) -> None:
    assert (blacklist_match((pattern,), address) is not None) is hit


# ---- RCPT TO ------------------------------------------------------------------------------------

RELAY_TRICKS = ['<user%other.test@example.org>', '<"user@other.test"@example.org>',
                '<@example.org:user@other.test>', '<other.test!user@example.org>',
                '<user@other.test@example.org>']


@pytest.mark.parametrize("trick", RELAY_TRICKS)
def test_relay_tricks_are_refused_for_everyone(trick: str) -> None:
    p = path(trick)
    assert routing_trick(p)
    for session in (outsider(), Session(client_ip="127.0.0.1"),
                    outsider(auth_user="joe@example.org")):
        refused = rcpt_precheck(make_policy(), session, p, {})
        assert isinstance(refused, R.Reply) and refused.code == 553 and refused.status == "5.7.1"


def test_local_domain_accepts_from_anyone_but_only_existing_mailboxes() -> None:
    policy = make_policy()
    p = path("<joe@example.org>")
    assert rcpt_to(policy, outsider(), p, local_domain=True, mailbox_exists=True).code == 250
    assert rcpt_to(policy, outsider(), p, local_domain=True, mailbox_exists=False).code == 550


def test_postmaster_is_always_accepted() -> None:
    policy = make_policy()
    bare = rcpt_precheck(policy, outsider(), path("<Postmaster>"), {})
    assert isinstance(bare, Path) and bare.address == "postmaster@example.org"
    assert rcpt_to(policy, outsider(), bare, local_domain=False, mailbox_exists=False).code == 250
    local = path("<postmaster@example.org>")
    assert rcpt_to(policy, outsider(), local, local_domain=True, mailbox_exists=False).code == 250


def test_no_open_relay() -> None:
    policy = make_policy()
    remote = path("<someone@elsewhere.test>")
    assert rcpt_to(policy, outsider(), remote, local_domain=False,
                   mailbox_exists=False) == R.RELAY_DENIED.format(address=remote)
    assert rcpt_to(policy, Session(client_ip="127.0.0.1"), remote, local_domain=False,
                   mailbox_exists=False).code == 250
    assert rcpt_to(policy, outsider(auth_user="joe@example.org"), remote, local_domain=False,
                   mailbox_exists=False).code == 250
    closed = make_policy(**{"smtp.relay_networks": []})
    assert rcpt_to(closed, Session(client_ip="127.0.0.1"), remote, local_domain=False,
                   mailbox_exists=False).code == 554


def test_relay_networks_match_ipv6_and_mapped_addresses() -> None:
    policy = make_policy(**{"smtp.relay_networks": ["192.0.2.0/24", "2001:db8::/32"]})
    remote = path("<a@elsewhere.test>")
    for ip, ok in (("192.0.2.44", True), ("::ffff:192.0.2.44", True), ("2001:db8::5", True),
                   ("192.0.3.1", False), ("2001:db9::1", False)):
        code = rcpt_to(policy, Session(client_ip=ip), remote, local_domain=False,
                       mailbox_exists=False).code
        assert (code == 250) is ok, ip


def test_outbound_blacklist_applies_to_local_and_logged_in_senders_only() -> None:
    policy = make_policy(**{"smtp.outbound_blacklist": ["@forbidden.test", "boss@example.org"]})
    far = path("<x@forbidden.test>")
    assert rcpt_to(policy, outsider(auth_user="joe@example.org"), far, local_domain=False,
                   mailbox_exists=False) == R.OUTBOUND_BLACKLIST.format(address=far)
    assert rcpt_to(policy, Session(client_ip="127.0.0.1"), far, local_domain=False,
                   mailbox_exists=False).code == 553
    boss = path("<boss@example.org>")
    assert rcpt_to(policy, Session(client_ip="127.0.0.1"), boss, local_domain=True,
                   mailbox_exists=True).code == 553
    # Mail arriving from the outside for a local mailbox is not "outbound".
    assert rcpt_to(policy, outsider(), boss, local_domain=True, mailbox_exists=True).code == 250


def test_at_most_100_recipients_then_452() -> None:
    policy = make_policy()
    session = outsider(recipients=[path(f"<u{i}@example.org>") for i in range(MAX_RECIPIENTS)])
    refused = rcpt_precheck(policy, session, path("<one.more@example.org>"), {})
    assert isinstance(refused, R.Reply) and (refused.code, refused.status) == (452, "4.5.3")
    session.recipients.pop()
    assert isinstance(rcpt_precheck(policy, session, path("<last@example.org>"), {}), Path)


def test_rcpt_parameters_are_not_supported() -> None:
    refused = rcpt_precheck(make_policy(), outsider(), path("<a@example.org>"),
                            {"NOTIFY": "NEVER"})
    assert isinstance(refused, R.Reply) and refused.code == 555


# ---- connection, RBL, message -------------------------------------------------------------------


def test_connection_cap() -> None:
    policy = make_policy(**{"smtp.max_connections": 3})
    assert connection_refused(policy, 3) is None
    refused = connection_refused(policy, 4)
    assert refused is not None and refused.code == 421


def test_rbl_only_on_port_25_and_never_for_relay_networks() -> None:
    zones = {"smtp.rbl_zones": ["bl.test"]}
    assert rbl_applies(make_policy(**zones), outsider())
    assert not rbl_applies(make_policy(**zones), Session(client_ip="127.0.0.1"))
    assert not rbl_applies(make_policy("submission", **zones), outsider())
    assert not rbl_applies(make_policy(), outsider())


def test_message_size_and_long_lines_at_end_of_data() -> None:
    policy = make_policy(**{"smtp.message_size_mb": 1})
    assert message_refusal(policy, 1024 * 1024, 1000) is None
    assert message_refusal(policy, 1024 * 1024 + 1, 10).code == 552
    refused = message_refusal(policy, 10, 1001)
    assert refused is not None and (refused.code, refused.status) == (554, "5.6.0")


def test_protocol_names_of_rfc_3848() -> None:
    assert protocol_name(Session(client_ip="x")) == "SMTP"
    assert protocol_name(Session(client_ip="x", esmtp=True)) == "ESMTP"
    assert protocol_name(Session(client_ip="x", esmtp=True, tls=True)) == "ESMTPS"
    assert protocol_name(Session(client_ip="x", esmtp=True, tls=True, auth_user="a")) == "ESMTPSA"
    assert protocol_name(Session(client_ip="x", esmtp=True, auth_user="a")) == "ESMTPA"


# ---- failed AUTH --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_auth_is_slowed_down_per_address_and_forgotten_later() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock)
    delays = [throttle.record_failure("192.0.2.1") for _ in range(7)]
    assert delays[0] == AUTH_FAILURE_DELAY
    assert delays == sorted(delays) and delays[1] == 2 * AUTH_FAILURE_DELAY
    assert delays[-1] == AUTH_FAILURE_DELAY_MAX
    assert throttle.record_failure("192.0.2.2") == AUTH_FAILURE_DELAY  # another client
    clock.now += AUTH_FAILURE_MEMORY + 1
    assert throttle.record_failure("192.0.2.1") == AUTH_FAILURE_DELAY


def test_successful_auth_clears_the_failures() -> None:
    throttle = AuthThrottle(Clock())
    throttle.record_failure("192.0.2.1")
    throttle.record_failure("192.0.2.1")
    throttle.record_success("192.0.2.1")
    assert throttle.failures("192.0.2.1") == 0


# ---- issue 16: canonical addresses, backscatter, loops, sender authorization --------------------


def test_a_quoted_local_part_that_stays_quoted_is_no_local_mailbox() -> None:
    policy = make_policy()
    spaced = path('<" joe"@example.org>')
    refused = rcpt_to(policy, outsider(), spaced, local_domain=True, mailbox_exists=True)
    assert (refused.code, refused.status) == (550, "5.1.1")
    same = path('<"joe"@example.org>')
    assert rcpt_to(policy, outsider(), same, local_domain=True, mailbox_exists=True).code == 250
    # Relayed, it is someone else's to judge.
    far = path('<" joe"@far.test>')
    relay = Session(client_ip="127.0.0.1")
    assert rcpt_to(policy, relay, far, local_domain=False, mailbox_exists=False).code == 250


def test_blacklists_compare_canonical_addresses() -> None:
    policy = make_policy(**{"smtp.inbound_blacklist": ["joe@example.org"]})
    assert isinstance(rcpt_precheck(policy, outsider(), path('<"joe"@Example.ORG>'), {}), R.Reply)
    passed = rcpt_precheck(policy, outsider(), path('<" joe"@example.org>'), {})
    assert isinstance(passed, Path)  # not joe@: it goes on, to be refused as no mailbox
    assert rcpt_to(policy, outsider(), passed, local_domain=True, mailbox_exists=False).code == 550


def test_a_disabled_mailbox_is_refused_with_5_2_1() -> None:
    refused = rcpt_to(make_policy(), outsider(), path("<joe@example.org>"), local_domain=True,
                      mailbox_exists=True, mailbox_active=False)
    assert refused == R.MAILBOX_DISABLED.format(address="<joe@example.org>")
    assert (refused.code, refused.status) == (550, "5.2.1")


def test_the_hostname_and_default_domain_are_local_without_a_domain_row() -> None:
    policy = make_policy()  # hostname mx.example.test, default domain example.org
    relay = Session(client_ip="127.0.0.1")
    for address in ("<nobody@mx.example.test>", "<nobody@EXAMPLE.org>"):
        reply = rcpt_to(policy, relay, path(address), local_domain=False, mailbox_exists=False)
        assert reply.code == 550, address


def test_postmaster_goes_to_the_named_mailbox() -> None:
    policy = make_policy(**{"server.postmaster": "admin@example.com"})
    pm = path("<PostMaster@mx.example.test>")
    assert rcpt_to(policy, outsider(), pm, local_domain=False, mailbox_exists=False).code == 250
    target = postmaster_target(policy, pm, local_domain=False, mailbox_exists=False)
    assert target == Path("admin", "example.com")
    # A domain with its own postmaster keeps it; other recipients and other domains: none.
    assert postmaster_target(policy, path("<postmaster@example.org>"), local_domain=True,
                             mailbox_exists=True) is None
    assert postmaster_target(policy, path("<joe@example.org>"), local_domain=True,
                             mailbox_exists=False) is None
    assert postmaster_target(policy, path("<postmaster@far.test>"), local_domain=False,
                             mailbox_exists=False) is None
    ok = postmaster_reply(policy, target, local_domain=True, mailbox_exists=True,
                          mailbox_active=True)
    assert ok.code == 250
    for facts in ((True, False, True), (True, True, False), (False, True, True)):
        later = postmaster_reply(policy, target, local_domain=facts[0], mailbox_exists=facts[1],
                                 mailbox_active=facts[2])
        assert (later.code, later.status) == (451, "4.3.5"), facts


def test_the_postmaster_default_is_postmaster_at_the_hostname() -> None:
    target = postmaster_target(make_policy(), path("<postmaster@example.org>"), local_domain=True,
                               mailbox_exists=False)
    assert target == Path("postmaster", "mx.example.test")


def test_hop_count_counts_ours_too() -> None:
    policy = make_policy()
    assert MAX_RECEIVED_HEADERS == 50
    assert message_refusal(policy, 10, 10, MAX_RECEIVED_HEADERS - 2) is None
    refused = message_refusal(policy, 10, 10, MAX_RECEIVED_HEADERS - 1)
    assert refused is not None and (refused.code, refused.status) == (554, "5.4.6")
    assert "50 Received headers" in refused.text


def test_sender_login_match() -> None:
    policy = make_policy()
    joe = outsider(auth_user="joe@example.org")

    def refusal(address: str, alias: bool = False, owner: bool = False,
                p: Policy = policy) -> R.Reply | None:
        return sender_login_refusal(p, joe, path(address), alias_of_login=alias,
                                    same_owner=owner)

    assert refusal("<joe@example.org>") is None
    assert refusal('<"Joe"@EXAMPLE.org>') is None
    assert refusal("<sales@example.com>", alias=True) is None
    assert refusal("<any@example.net>", owner=True) is None
    refused = refusal("<boss@far.test>")
    assert refused == R.SENDER_NOT_OWNED.format(address="<boss@far.test>",
                                                user="joe@example.org")
    assert (refused.code, refused.status) == (553, "5.7.1")
    strict = make_policy(**{"smtp.sender_owner_domains": False})
    assert refusal("<any@example.net>", owner=True, p=strict) is not None
    off = make_policy(**{"smtp.sender_login_match": False})
    assert refusal("<boss@far.test>", p=off) is None
    # Not logged in, or the null sender: nothing to check.
    assert not sender_check_needed(policy, outsider(), path("<boss@far.test>"))
    assert not sender_check_needed(policy, joe, path("<>"))


def test_port_25_default_offers_auth_only_after_starttls() -> None:
    policy = make_policy()
    assert not offers_auth(policy, outsider())
    assert offers_auth(policy, outsider(tls=True))
    assert auth_start_refusal(policy, outsider(), "PLAIN") == R.AUTH_NEEDS_TLS


def test_a_quoted_bare_postmaster_is_postmaster_too() -> None:
    bare = rcpt_precheck(make_policy(), outsider(), path('<"PostMaster">'), {})
    assert isinstance(bare, Path) and bare.canonical == "postmaster@example.org"
