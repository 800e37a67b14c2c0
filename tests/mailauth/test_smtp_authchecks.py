"""The smtp service's mail authentication decisions, as plain functions (no network)."""

from __future__ import annotations

import subprocess
import sys

from mailyard.mailauth.inbound import DkimResult, DmarcResult, SpfResult, Verdict
from mailyard.settings.registry import defaults
from mailyard.smtp import replies as R
from mailyard.smtp.authchecks import (
    QUARANTINE_KEY,
    TRACE_KEY,
    AuthPolicy,
    applies,
    outcome,
    recipient_group,
    spf_refusal,
)


def policy(service: str = "smtp", **values: object) -> AuthPolicy:
    settings = defaults() | {"server.hostname": "mx.example.test"} | values
    return AuthPolicy.from_settings(settings, service)


def verdict(dmarc: str, dmarc_policy: str = "reject") -> Verdict:
    return Verdict(SpfResult("pass", "attacker.test", "mailfrom"),
                   [DkimResult("fail", "bank.test", "s1")],
                   DmarcResult(dmarc, "bank.test", dmarc_policy))


def test_only_mail_from_other_servers_on_port_25_is_checked() -> None:
    assert applies(policy(), relay_client=False, authenticated=False)
    assert not applies(policy(), relay_client=True, authenticated=False)
    assert not applies(policy(), relay_client=False, authenticated=True)
    assert not applies(policy("submission"), relay_client=False, authenticated=False)
    assert not applies(policy(**{"mailauth.inbound_checks": False}), False, False)


def test_dmarc_reject_quarantine_and_the_settings_that_turn_them_off() -> None:
    refusal, extra = outcome(policy(), verdict("fail"), exempt=False)
    assert refusal is not None and refusal.name == "DMARC_REJECT"
    assert (refusal.code, refusal.status) == (550, "5.7.1") and "bank.test" in refusal.text
    assert extra[TRACE_KEY].startswith("Authentication-Results: mx.example.test;")
    refusal, extra = outcome(policy(**{"dmarc.reject": False}), verdict("fail"), exempt=False)
    assert refusal is None and "bank.test" in extra[QUARANTINE_KEY]
    refusal, extra = outcome(policy(**{"dmarc.reject": False, "dmarc.quarantine": False}),
                             verdict("fail"), exempt=False)
    assert refusal is None and QUARANTINE_KEY not in extra
    assert outcome(policy(), verdict("fail", "quarantine"), exempt=False)[1][QUARANTINE_KEY]
    refusal, extra = outcome(policy(), verdict("fail"), exempt=True)
    assert refusal is None and QUARANTINE_KEY not in extra and TRACE_KEY in extra
    assert QUARANTINE_KEY not in outcome(policy(), verdict("pass"), exempt=False)[1]


def test_exempt_and_other_recipients_never_share_a_transaction() -> None:
    p = policy(**{"dmarc.exempt_domains": ["lists.example.org"]})
    refusal, group = recipient_group(p, None, "example.org")
    assert refusal is None and group is False
    assert recipient_group(p, group, "other.test") == (None, False)
    refusal, kept = recipient_group(p, group, "LISTS.example.org")
    assert refusal is R.AUTH_CHECK_GROUP and kept is False
    assert (refusal.code, refusal.status) == (452, "4.5.3")
    assert recipient_group(p, None, "lists.example.org") == (None, True)


def test_spf_fail_is_refused_only_when_the_administrator_asks() -> None:
    fail = SpfResult("fail", "example.net", "mailfrom")
    assert spf_refusal(policy(), fail, "192.0.2.1") is None  # default: only marked
    refusal = spf_refusal(policy(**{"spf.refuse_fail": True}), fail, "192.0.2.1")
    assert refusal is not None and (refusal.code, refusal.status) == (550, "5.7.23")
    assert spf_refusal(policy(**{"spf.refuse_fail": True}),
                       SpfResult("softfail", "example.net", "mailfrom"), "192.0.2.1") is None
    assert spf_refusal(policy(**{"spf.refuse_fail": True}),
                       SpfResult("fail", "h.example.net", "helo"), "192.0.2.1") is None


def test_the_public_suffix_list_is_read_for_the_checking_service_only() -> None:
    """The submission service checks no mail and never holds the list (about 1.2 MiB); the
    smtp service reads it at start, before dropping root; anything else at first use."""
    code = ("import sys; from mailyard.mailauth import inbound; from mailyard.smtp import "
            "authchecks; authchecks.prepare(sys.argv[1]); print(len(inbound._PSL), "
            "inbound.organizational_domain('a.b.example.co.uk'), len(inbound._PSL))")
    for service, before in (("submission", "0"), ("smtp", "1")):
        done = subprocess.run([sys.executable, "-c", code, service], capture_output=True,
                              text=True, timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [before, "example.co.uk", "1"]
