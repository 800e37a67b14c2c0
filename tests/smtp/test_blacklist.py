"""The MTA-level blacklists as qmail administrators write them: stock `badmailfrom` entries and
qregex patterns, checked against glibc's own POSIX regexec (what the qregex patch calls) and by
their effect on a running smtp server."""

from __future__ import annotations

import ctypes
import ctypes.util
import smtplib

import pytest
from smtp_helpers import JOE, change, queue_entries

from mailyard.blacklist import check_entry, first_match
from mailyard.home import Home
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError

# The guide's example value for the inbound blacklist (4.5), as one line.
GUIDE_VALUE = r".*\ @.*\ !.*@.*\..*.*%.*"
# The example control files of the qregex README, plus the guide's value.
QREGEX_PATTERNS = [GUIDE_VALUE, r"bad\.domain\.com", "!@", "[!%#:*^(){}]", "@.*@", r"!\."]

# Envelope addresses as `smtp.policy` hands them to the blacklist: unquoted local part @ domain.
ADDRESSES = [
    "x @y !z@h.i%j@example.org",   # spaces, a bang and a percent hack: the guide's value hits
    "x @y@example.org",            # a space before an @, but none of the rest
    "a b@example.org",             # a space, no " @"
    "host!user@example.org",       # bang path
    "user%host@example.org",       # percent hack
    "joe@localhost",               # no dot in the domain
    "joe@example.org",
    "Someone@Bad.Domain.COM",
    "joe@mail.bad.domain.com.example",
    "joe",                         # no @ at all
]

REG_EXTENDED, REG_ICASE, REG_NOSUB = 1, 2, 8
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def posix_regexec(pattern: str, address: str) -> bool:
    """What qregex's matchregex does: regcomp(REG_EXTENDED|REG_ICASE) and regexec."""
    regex = ctypes.create_string_buffer(256)  # larger than glibc's regex_t (64 octets)
    assert _LIBC.regcomp(regex, pattern.encode(), REG_EXTENDED | REG_ICASE | REG_NOSUB) == 0
    try:
        return _LIBC.regexec(regex, address.encode(), 0, None, 0) == 0
    finally:
        _LIBC.regfree(regex)


def qregex(entry: str, address: str) -> bool:
    """The qregex patch's rule for one entry, including its leading `!`."""
    if entry.startswith("!"):
        return not posix_regexec(entry[1:], address)
    return posix_regexec(entry, address)


@pytest.mark.parametrize("entry", QREGEX_PATTERNS)
def test_qregex_patterns_match_as_posix_regexec_does(entry: str) -> None:
    assert check_entry(entry) == entry
    for address in ADDRESSES:
        assert (first_match((entry,), address) is not None) is qregex(entry, address), address


def test_the_guides_value_is_one_pattern_and_catches_what_qregex_catches() -> None:
    [value] = setting("smtp.inbound_blacklist").parse(GUIDE_VALUE)
    assert value == GUIDE_VALUE
    hits = [a for a in ADDRESSES if first_match((value,), a)]
    assert hits == ["x @y !z@h.i%j@example.org"]


def test_a_leading_bang_negates_but_not_inside_a_bracket() -> None:
    assert first_match(("!@",), "joe") == "!@"
    assert first_match(("!@",), "joe@example.org") is None
    assert first_match(("[!]",), "host!user@example.org") == "[!]"
    assert first_match(("[!]",), "joe@example.org") is None


def test_plain_entries_keep_stock_badmailfrom_meaning() -> None:
    entries = ("spammer@bad.test", "@worse.test", "*@old.test", "x.y+z@dots.test")
    assert first_match(entries, "SPAMMER@Bad.Test") == "spammer@bad.test"
    assert first_match(entries, "xspammer@bad.test") is None  # a regex would have matched
    assert first_match(entries, "spammer@bad.test.example") is None
    assert first_match(entries, "a@worse.test") == "@worse.test"
    assert first_match(entries, "a@sub.worse.test") is None  # @domain is not its subdomains
    assert first_match(entries, "a@old.test") == "*@old.test"
    assert first_match(entries, "x.y+z@dots.test") == "x.y+z@dots.test"
    assert first_match(entries, "xxy+z@dots.test") is None  # the dot is a dot


def test_the_null_sender_never_matches() -> None:
    assert first_match(("!@", ".*", "^$", "!."), "") is None


@pytest.mark.parametrize("entry, reason", [
    ("(unclosed@x", "missing )"),
    (r"(a)\1@x", r"invalid escape sequence: \1"),
    (r"\d+@x\.test", "POSIX has no"),
    ("*@*.junk.test", "starts with *"),
    ("[[=a=]]@x", "equivalence classes"),
    ("a{2000}@x", "invalid repetition size"),
    ("!", "a lone !"),
    ("x" * 1100, "longer than 1024"),
])
def test_an_invalid_entry_is_refused_with_the_entry_the_reason_and_what_is_allowed(
        entry: str, reason: str) -> None:
    with pytest.raises(SettingError) as refused:
        setting("smtp.inbound_blacklist").parse(f"ok@example.org\n{entry}")
    text = str(refused.value)
    assert "smtp.inbound_blacklist" in text and "line 2" in text and reason in text
    assert f"'{entry[:40]}" in text and "POSIX extended regular expression" in text


def test_backtracking_patterns_take_linear_time() -> None:
    # (a+)+$ against a long run of a's ending in a mismatch takes exponential time on a
    # backtracking engine (Python's re would not return within the test's lifetime).
    evil = "(a+)+$"
    assert check_entry(evil) == evil
    assert first_match((evil,), "a" * 5000 + "!@x.test") is None
    assert first_match((evil,), "joe@x.test") is None


def test_the_running_smtp_server_refuses_what_qregex_refuses(node: Home, start) -> None:  # type: ignore[no-untyped-def]
    change(node, {"smtp.inbound_blacklist": "\n".join([GUIDE_VALUE, "[!%]", "!\\.", "@spammer.test"])})
    svc = start("smtp")
    senders = {  # MAIL FROM path -> refused?
        '<"x @y !z@h.i%j"@example.org>': True,   # the guide's value
        '<"x @y"@example.org>': False,
        '<"a b"@example.org>': False,
        "<host!user@example.org>": True,          # [!%]
        "<user%host@example.org>": True,          # [!%]
        "<joe@localhost>": True,                  # !\. : no dot anywhere
        "<boss@spammer.test>": True,
        "<boss@sub.spammer.test>": False,
        "<someone@remote.test>": False,
        "<>": False,                              # the null sender is never matched
    }
    with smtplib.SMTP("127.0.0.1", node.port("smtp")) as s:
        s.ehlo()
        for sender, refused in senders.items():
            code, text = s.docmd(f"MAIL FROM:{sender}")
            assert (code == 553) is refused, (sender, code, text)
            if code == 250:
                s.rset()
        s.mail("someone@remote.test")
        assert s.rcpt(JOE)[0] == 250
        assert s.data(b"Subject: kept\r\n\r\nnot blacklisted\r\n")[0] == 250
    svc.wait_log("rule=INBOUND_BLACKLIST value=<host!user@example.org>")
    assert len(queue_entries(node)) == 1
