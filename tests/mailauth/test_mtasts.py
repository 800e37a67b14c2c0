"""MTA-STS (RFC 8461): the TXT record, the policy file, and MX patterns (no network here; the
fetch and its enforcement are tested against a policy server in test_mtasts_delivery.py)."""

from __future__ import annotations

import pytest

from mailyard.mailauth.mtasts import PolicyError, mx_matches, parse_policy, parse_txt

POLICY = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmx: *.backup.example.test\n" \
         "max_age: 86400\n"


def test_the_txt_record_gives_the_id() -> None:
    assert parse_txt(["v=STSv1; id=20261202T01;"]) == "20261202T01"
    assert parse_txt(["v=STSv1; id=abc", "v=spf1 -all"]) == "abc"
    assert parse_txt([]) is None
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none
    assert parse_txt(["v=STSv1; id=has-a-dash"]) is None  # id is 1-32 letters and digits
    assert parse_txt(["v=STSv1;"]) is None


def test_a_policy_file_is_read_strictly() -> None:
    policy = parse_policy("example.test", "abc", POLICY.replace("\n", "\r\n"), now=1000.0)
    assert (policy.mode, policy.max_age) == ("enforce", 86400)
    assert policy.mx == ("mail.example.test", "*.backup.example.test")
    assert not policy.expired(1000.0 + 86400) and policy.expired(1000.0 + 86401)
    for broken, reason in [
            (POLICY.replace("STSv1", "STSv2"), "version"),
            (POLICY.replace("enforce", "strict"), "mode"),
            (POLICY.replace("86400", "forever"), "max_age"),
            (POLICY.replace("86400", "99999999999"), "outside"),
            ("version: STSv1\nmode: enforce\nmax_age: 60\n", "no mx"),
            (POLICY + "garbage line\n", "key: value")]:
        with pytest.raises(PolicyError, match=reason):
            parse_policy("example.test", "abc", broken, now=0.0)
    assert parse_policy("example.test", "x", "version: STSv1\nmode: none\nmax_age: 0\n",
                        now=0.0).mode == "none"


def test_mx_patterns_cover_one_label() -> None:
    policy = parse_policy("example.test", "abc", POLICY, now=0.0)
    assert policy.allows("MAIL.example.test.")
    assert policy.allows("mx1.backup.example.test")
    assert not policy.allows("a.b.backup.example.test")  # a wildcard is one label
    assert not policy.allows("backup.example.test")
    assert not policy.allows("evil.example.test")
    assert mx_matches("*.example.test", "x.example.test") and not mx_matches("*.example.test", "")
