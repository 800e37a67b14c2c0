"""SPF, DKIM and DMARC checks of incoming mail against a DNS server on loopback (issue 18.2),
hostile records included: each gives a clear result, never an exception or a hang."""

from __future__ import annotations

import pytest
from tests.dns_support import DnsServer

from mailyard.mailauth.dkim_sign import sign
from mailyard.mailauth.dnscheck import make_resolver
from mailyard.mailauth.inbound import (
    DkimResult,
    DmarcResult,
    SpfResult,
    Verdict,
    authentication_results,
    check_dkim,
    check_message,
    check_spf,
    claims_our_host,
    disposition,
    evaluate_dmarc,
    txt_lookup,
    use_resolver_for_spf,
)
from mailyard.mailauth.records import quote_txt, split_txt
from mailyard.store.dkim_keys import SigningKey, new_key_pair


def message(author: str) -> bytes:
    return (f"From: {author}\r\nTo: joe@example.org\r\nSubject: checked\r\n"
            f"Date: Wed, 02 Dec 2026 03:00:00 +0000\r\nMessage-ID: <m1@x.test>\r\n\r\n"
            f"body\r\n").encode()


@pytest.fixture
def dns(dns_server: DnsServer) -> DnsServer:
    use_resolver_for_spf(make_resolver(dns_server.setting))
    return dns_server


def txt(dns: DnsServer, name: str, text: str) -> None:
    dns.add(name, "TXT", " ".join(quote_txt(p) for p in split_txt(text)))


def publish_key(dns: DnsServer, domain: str, selector: str, algorithm: str = "rsa") -> SigningKey:
    pem, public = new_key_pair(algorithm)
    txt(dns, f"{selector}._domainkey.{domain}", f"v=DKIM1; k={algorithm}; p={public}")
    return SigningKey(domain, selector, algorithm, pem.encode())


# ---- SPF ---------------------------------------------------------------------------------------

def test_spf_pass_fail_and_the_helo_identity_for_a_null_sender(dns: DnsServer) -> None:
    txt(dns, "example.net", "v=spf1 ip4:127.0.0.5 -all")
    assert check_spf("127.0.0.5", "a@example.net", "mx.example.net").result == "pass"
    assert check_spf("127.0.0.9", "a@example.net", "mx.example.net").result == "fail"
    null = check_spf("127.0.0.5", "", "example.net")
    assert (null.result, null.identity, null.domain) == ("pass", "helo", "example.net")
    assert check_spf("127.0.0.5", "a@nothing.test", "h.test").result == "none"


def test_spf_include_loops_and_the_ten_lookup_limit_are_permerrors(dns: DnsServer) -> None:
    txt(dns, "loop-a.test", "v=spf1 include:loop-b.test -all")
    txt(dns, "loop-b.test", "v=spf1 include:loop-a.test -all")
    assert check_spf("127.0.0.5", "a@loop-a.test", "h.test").result == "permerror"
    for i in range(12):
        txt(dns, f"chain{i}.test", f"v=spf1 include:chain{i + 1}.test -all")
    txt(dns, "chain12.test", "v=spf1 ip4:127.0.0.5 -all")
    assert check_spf("127.0.0.5", "a@chain0.test", "h.test").result == "permerror"


def test_spf_oversized_and_broken_records(dns: DnsServer) -> None:
    txt(dns, "big.test", "v=spf1 " + " ".join(f"foo{i}:bar" for i in range(500)) + " -all")
    assert check_spf("127.0.0.5", "a@big.test", "h.test").result == "permerror"
    txt(dns, "two.test", "v=spf1 -all")
    txt(dns, "two.test", "v=spf1 +all")
    assert check_spf("127.0.0.5", "a@two.test", "h.test").result == "permerror"
    dns.resolver.servfail.add("down.test")
    assert check_spf("127.0.0.5", "a@down.test", "h.test").result == "temperror"


# ---- DKIM --------------------------------------------------------------------------------------

def test_dkim_pass_fail_and_keys_that_are_not_keys(dns: DnsServer) -> None:
    lookup = txt_lookup(make_resolver(dns.setting))
    key = publish_key(dns, "signer.test", "s1")
    signed = sign(message("a@signer.test"), [key]) + message("a@signer.test")
    assert check_dkim(signed, lookup) == [DkimResult("pass", "signer.test", "s1")]
    changed = signed.replace(b"body", b"other")
    assert check_dkim(changed, lookup)[0].result == "fail", check_dkim(changed, lookup)
    txt(dns, "s2._domainkey.broken.test", "v=DKIM1; k=rsa; p=bm90IGEga2V5")  # "not a key"
    bad = SigningKey("broken.test", "s2", "rsa", key.private_pem)
    [result] = check_dkim(sign(message("a@broken.test"), [bad]) + message("a@broken.test"), lookup)
    assert result.result in ("permerror", "fail") and result.domain == "broken.test"
    missing = SigningKey("nokey.test", "s3", "rsa", key.private_pem)
    [result] = check_dkim(sign(message("a@nokey.test"), [missing]) + message("a@nokey.test"),
                          lookup)
    assert result.result in ("permerror", "fail")
    assert check_dkim(message("a@signer.test"), lookup) == []


# ---- DMARC -------------------------------------------------------------------------------------

def test_forged_mail_from_a_reject_domain_is_refused(dns: DnsServer) -> None:
    txt(dns, "_dmarc.bank.test", "v=DMARC1; p=reject")
    txt(dns, "attacker.test", "v=spf1 ip4:127.0.0.66 -all")
    verdict = check_message(message("ceo@bank.test"), "127.0.0.66", "x@attacker.test",
                            "mx.attacker.test", make_resolver(dns.setting))
    assert verdict.spf.result == "pass"  # SPF passes for the attacker's own domain ...
    assert (verdict.dmarc.result, verdict.dmarc.policy) == ("fail", "reject")  # ... unaligned
    assert disposition(verdict, act_on_reject=True, act_on_quarantine=True) == "reject"
    assert disposition(verdict, act_on_reject=False, act_on_quarantine=True) == "quarantine"
    assert disposition(verdict, act_on_reject=False, act_on_quarantine=False) == "accept"


def test_aligned_dkim_or_spf_passes_dmarc(dns: DnsServer) -> None:
    txt(dns, "_dmarc.bank.test", "v=DMARC1; p=reject; adkim=r")
    key = publish_key(dns, "mail.bank.test", "s1")  # relaxed: a subdomain's signature aligns
    signed = sign(message("ceo@bank.test"), [key]) + message("ceo@bank.test")
    verdict = check_message(signed, "127.0.0.66", "bounce@elsewhere.test", "h.test",
                            make_resolver(dns.setting))
    assert verdict.dmarc.result == "pass" and disposition(verdict, True, True) == "accept"
    txt(dns, "bank.test", "v=spf1 ip4:127.0.0.7 -all")
    verdict = check_message(message("ceo@bank.test"), "127.0.0.7", "list@bank.test", "h.test",
                            make_resolver(dns.setting))
    assert (verdict.spf.result, verdict.dmarc.result) == ("pass", "pass")


def test_dmarc_records_found_at_the_organizational_domain_and_bad_records(dns: DnsServer) -> None:
    lookup = txt_lookup(make_resolver(dns.setting))
    no_spf = SpfResult("none", "x.test", "mailfrom")
    txt(dns, "_dmarc.shop.co.uk", "v=DMARC1; p=quarantine; sp=reject")
    result = evaluate_dmarc(message("a@mail.shop.co.uk"), no_spf, [], lookup)
    assert (result.result, result.policy) == ("fail", "reject")  # sp= for a subdomain
    txt(dns, "_dmarc.odd.test", "v=DMARC1; p=maybe")
    assert evaluate_dmarc(message("a@odd.test"), no_spf, [], lookup).result == "none"
    txt(dns, "_dmarc.notfirst.test", "p=reject; v=DMARC1")
    assert evaluate_dmarc(message("a@notfirst.test"), no_spf, [], lookup).result == "none"
    txt(dns, "_dmarc.half.test", "v=DMARC1; p=reject; pct=50")
    assert evaluate_dmarc(message("a@half.test"), no_spf, [], lookup,
                          sample=lambda: 0.9).policy == "quarantine"  # outside the sample
    assert evaluate_dmarc(message("a@half.test"), no_spf, [], lookup,
                          sample=lambda: 0.1).policy == "reject"
    dns.resolver.servfail.add("_dmarc.flaky.test")
    assert evaluate_dmarc(message("a@flaky.test"), no_spf, [], lookup).result == "temperror"
    two_from = b"From: a@x.test\r\nFrom: b@y.test\r\n\r\nx\r\n"
    assert evaluate_dmarc(two_from, no_spf, [], lookup).result == "permerror"


# ---- the header --------------------------------------------------------------------------------

def test_authentication_results_header_and_forged_ones() -> None:
    verdict = Verdict(SpfResult("pass", "example.net", "mailfrom"),
                      [DkimResult("pass", "example.net", "s1")],
                      DmarcResult("pass", "example.net"))
    header = authentication_results("mx.example.test", verdict)
    assert header.startswith(b"Authentication-Results: mx.example.test;")
    assert b"spf=pass smtp.mailfrom=example.net" in header
    assert b"dkim=pass header.d=example.net header.s=s1" in header
    assert b"dmarc=pass header.from=example.net" in header and header.endswith(b"\r\n")
    assert claims_our_host(" mx.example.test; spf=pass", "MX.example.test")
    assert not claims_our_host(" other.test; spf=pass", "mx.example.test")
