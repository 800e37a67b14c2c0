"""Envelope path grammar (RFC 5321 4.1.2) and the SASL PLAIN / LOGIN exchanges."""

from __future__ import annotations

import base64

import pytest

from mailyard.address import AddressError, canonical, lookup_key, parse_path_argument
from mailyard.smtp.auth import (
    Cancelled,
    Challenge,
    Credentials,
    LoginExchange,
    Malformed,
    PlainExchange,
    start_exchange,
)


@pytest.mark.parametrize("arg, address, params", [
    ("<joe@Example.ORG>", "joe@example.org", {}),
    (" <joe@example.org>", "joe@example.org", {}),
    ("joe@example.org", "joe@example.org", {}),
    ("<>", "", {}),
    ("<a@b.test> SIZE=100 BODY=8BITMIME", "a@b.test", {"SIZE": "100", "BODY": "8BITMIME"}),
    ('<"john smith"@example.org>', '"john smith"@example.org', {}),
    ("<a@[192.0.2.1]>", "a@[192.0.2.1]", {}),
    ("<a@[IPv6:2001:db8::1]>", "a@[ipv6:2001:db8::1]", {}),
    ("<postmaster>", "postmaster", {}),
])
def test_paths_that_parse(arg: str, address: str, params: dict[str, str]) -> None:
    p, got = parse_path_argument(arg)
    assert p.address == address and got == params


@pytest.mark.parametrize("arg", [
    "<a@b.test", "<a@@b.test>", "<@b.test>", "<a@-bad-.test>", "<a@b.test>SIZE=1",
    "<a@[300.1.1.1]>", "<" + "x" * 65 + "@b.test>", "<a@" + "b" * 64 + ".test>",
    "<a@b.test> SIZE=1=2", "<a\r@b.test>", "<a@b.test\n>", "<a b@c.test>", '<"open@b.test>',
    "<a@b.test> =x", "",
])
def test_paths_that_do_not(arg: str) -> None:
    with pytest.raises(AddressError):
        parse_path_argument(arg)


def test_routing_syntax_is_parsed_for_policy_to_refuse() -> None:
    p, _ = parse_path_argument("<@hop.test,@hop2.test:user@other.test>")
    assert p.source_route == "@hop.test,@hop2.test" and p.address == "user@other.test"
    p, _ = parse_path_argument('<"user@other.test"@example.org>')
    assert p.quoted and p.unquoted_local == "user@other.test" and p.domain == "example.org"
    p, _ = parse_path_argument("<user@other.test@example.org>")
    assert p.local == "user@other.test" and p.domain == "example.org"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_with_initial_response() -> None:
    step = PlainExchange().start(b64(b"\0joe@example.org\0s3cret pass"))
    assert step == Credentials("joe@example.org", "s3cret pass")


def test_plain_without_initial_response_asks_with_an_empty_challenge() -> None:
    ex = PlainExchange()
    assert ex.start(None) == Challenge("")
    assert ex.step(b64(b"joe@example.org\0joe@example.org\0pw")) == Credentials(
        "joe@example.org", "pw")


@pytest.mark.parametrize("data", ["not base64!", b64(b"only\0two"),
                                  b64(b"other@x.test\0joe@example.org\0pw"), b64(b"\0\0pw"),
                                  b64(b"\0joe\0\xff\xfe")])
def test_plain_refuses_malformed_or_borrowed_identities(data: str) -> None:
    assert isinstance(PlainExchange().start(data), Malformed)


def test_login_asks_username_then_password() -> None:
    ex = LoginExchange()
    assert ex.start(None) == Challenge(b64(b"Username:"))
    assert ex.step(b64(b"joe@example.org")) == Challenge(b64(b"Password:"))
    assert ex.step(b64(b"pw")) == Credentials("joe@example.org", "pw")


def test_login_with_initial_username_and_cancel() -> None:
    ex = LoginExchange()
    assert ex.start(b64(b"joe@example.org")) == Challenge(b64(b"Password:"))
    assert ex.step("*") == Cancelled()


def test_only_plain_and_login_are_offered() -> None:
    assert start_exchange("CRAM-MD5") is None
    assert start_exchange("PLAIN") is not None and start_exchange("LOGIN") is not None


@pytest.mark.parametrize("written, spelled, key", [
    ('"joe"@Example.ORG', "joe@example.org", "joe@example.org"),
    ("<Joe@Example.ORG>", "Joe@example.org", "joe@example.org"),
    ('"j\\oe"@x.test', "joe@x.test", "joe@x.test"),
    ('"a.b"@x.test', "a.b@x.test", "a.b@x.test"),
    ('" joe"@example.org', '" joe"@example.org', None),
    ('"a..b"@x.test', '"a..b"@x.test', None),
    ('"a\\"b"@x.test', '"a\\"b"@x.test', None),
    ('"a\\ b"@x.test', '"a b"@x.test', None),
    ("@relay.test:joe@x.test", "joe@x.test", "joe@x.test"),
    ("", "", None),
    ("<>", "", None),
])
def test_canonical_form(written: str, spelled: str, key: str | None) -> None:
    assert canonical(written) == spelled
    assert canonical(spelled) == spelled  # idempotent
    assert lookup_key(written) == key


@pytest.mark.parametrize("text", [" joe@example.org", "joe@example.org ", "joe @example.org",
                                  "jo\x00e@example.org", "jo\u00e9@example.org"])
def test_canonical_trims_nothing_and_refuses_what_is_no_address(text: str) -> None:
    with pytest.raises(AddressError):
        canonical(text)
    assert lookup_key(text) is None
