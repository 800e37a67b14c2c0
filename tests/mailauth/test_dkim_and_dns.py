"""DKIM keys and signatures, the DNS records to publish, and their live check (issue 18).

Signatures are verified by an independent implementation, Perl's Mail::DKIM (the one
SpamAssassin uses), fetching the public keys from a DNS server on loopback that serves exactly
the records `mailyard dns records` printed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import dkim
import pytest
from tests.dkim_support import publish, verify
from tests.dns_support import DnsServer

from mailyard.home import Home
from mailyard.mailauth.dkim_sign import from_domain, headers_to_sign, sign, signing_domain
from mailyard.mailauth.dnscheck import judge_dkim, judge_dmarc, judge_spf, lookup, make_resolver
from mailyard.mailauth.outbound import Signer
from mailyard.mailauth.records import Record, split_txt
from mailyard.queue import Envelope
from mailyard.store import dkim_keys
from mailyard.store.accounts import add_domain
from mailyard.store.settings_store import set_setting

MESSAGE = (b"From: Fred Example <fred@example.org>\r\n"
           b"To: someone@elsewhere.test\r\n"
           b"Subject: a signed message\r\n"
           b"Date: Wed, 02 Dec 2026 03:00:00 +0000\r\n"
           b"Message-ID: <signed.1@example.org>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"Hello from example.org.\r\n"
           b".leading dot stays\r\n")

def mailyard(cli_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mailyard", *args], env=cli_env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def signing_home(home: Home, cli_env: dict[str, str], dns_server: DnsServer) -> Home:
    set_setting(home, "smtp.dns_resolver", dns_server.setting)
    return home


# ---- the records -------------------------------------------------------------------------------

def test_dns_records_prints_zone_lines_with_keys_split_in_255_octet_strings(
        signing_home: Home, cli_env: dict[str, str]) -> None:
    assert mailyard(cli_env, "domain", "add", "example.org").returncode == 0
    out = mailyard(cli_env, "dns", "records", "example.org")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    [dkim] = [line for line in lines if "._domainkey." in line]
    assert re.match(r'^my\d{8}\._domainkey\.example\.org\. \d+ IN TXT "v=DKIM1; k=rsa; p=', dkim)
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', dkim)
    assert len(strings) >= 2 and all(len(s.encode()) <= 255 for s in strings)
    assert any(re.match(r'^example\.org\. \d+ IN TXT "v=spf1 mx a:mx\.example\.test -all"$', line)
               for line in lines)
    assert any(re.match(r'^_dmarc\.example\.org\. \d+ IN TXT "v=DMARC1; p=quarantine', line)
               for line in lines)
    assert any(re.match(r"^example\.org\. \d+ IN MX 10 mx\.example\.test\.$", line)
               for line in lines)


def test_records_of_an_unknown_domain_are_refused(signing_home: Home,
                                                  cli_env: dict[str, str]) -> None:
    out = mailyard(cli_env, "dns", "records", "nowhere.test")
    assert out.returncode == 1 and "not a domain of this node" in out.stderr


def test_txt_strings_never_cut_a_utf8_sequence() -> None:
    text = "a" * 254 + "é" + "b" * 300
    parts = split_txt(text)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= 255 for p in parts) and parts[0] == "a" * 254


# ---- the live check ----------------------------------------------------------------------------

def test_dns_check_passes_when_everything_is_published(signing_home: Home, cli_env: dict[str, str],
                                                       dns_server: DnsServer) -> None:
    mailyard(cli_env, "domain", "add", "example.org")
    publish(dns_server, mailyard(cli_env, "dns", "records", "example.org").stdout)
    out = mailyard(cli_env, "dns", "check", "example.org")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MISSING" not in out.stdout and "WRONG" not in out.stdout
    # the optional ones are warnings only: no MTA-STS policy, no address for the hostname
    assert re.search(r"MTA-STS\s+_mta-sts\.example\.org\s+WARNING", out.stdout)
    assert re.search(r"PTR\s+mx\.example\.test\s+WARNING", out.stdout)


def test_dns_check_names_what_is_missing_and_exits_1(signing_home: Home, cli_env: dict[str, str],
                                                     dns_server: DnsServer) -> None:
    mailyard(cli_env, "domain", "add", "example.org")
    zone = mailyard(cli_env, "dns", "records", "example.org").stdout
    publish(dns_server, "\n".join(line for line in zone.splitlines() if "_domainkey" not in line))
    out = mailyard(cli_env, "dns", "check", "example.org")
    assert out.returncode == 1
    assert re.search(r"DKIM\s+my\d{8}\._domainkey\.example\.org\s+MISSING", out.stdout)
    assert re.search(r"SPF\s+example\.org\s+OK", out.stdout)


def test_dns_check_on_hostile_records_gives_a_clear_result(signing_home: Home,
                                                           cli_env: dict[str, str],
                                                           dns_server: DnsServer) -> None:
    mailyard(cli_env, "domain", "add", "example.org")
    zone = mailyard(cli_env, "dns", "records", "example.org").stdout
    [selector] = re.findall(r"^(my\d{8})\._domainkey", zone, re.MULTILINE)
    dns_server.add("example.org", "MX", "10 mx.example.test.")
    dns_server.add("example.org", "TXT", '"v=spf1 mx -all"', '"v=spf1 include:example.org -all"')
    dns_server.add(f"{selector}._domainkey.example.org", "TXT", '"v=DKIM1; k=rsa; p=notakey!!"')
    # 4000 octets of noise: truncated over UDP, fetched again over TCP
    dns_server.add("_dmarc.example.org", "TXT", " ".join(['"' + "x" * 250 + '"'] * 16))
    dns_server.resolver.servfail.add("_smtp._tls.example.org")
    out = mailyard(cli_env, "dns", "check", "example.org")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert re.search(r"SPF\s+example\.org\s+WRONG\s+2 SPF records", out.stdout)
    assert re.search(r"DKIM\s+\S+\s+WRONG\s+the published key is not", out.stdout)
    assert re.search(r"DMARC\s+_dmarc\.example\.org\s+MISSING", out.stdout)
    assert re.search(r"TLS-RPT\s+_smtp\._tls\.example\.org\s+WARNING\s+lookup failed", out.stdout)


def test_judges_of_published_records() -> None:
    assert judge_spf("mx.example.test", ["v=spf1 +all"])[0] == "wrong"
    assert judge_spf("mx.example.test", ["v=spf1 a:mx.example.test ~all"])[0] == "ok"
    assert judge_spf("mx.example.test", ["some other text"])[0] == "missing"
    assert judge_dmarc("reject", ["v=DMARC1; p=reject"]) == ("ok", "")
    assert judge_dmarc("reject", ["v=DMARC1; p=reject; p=none"])[0] == "wrong"  # tag twice
    assert judge_dmarc("reject", ["v=DMARC1", "v=DMARC1; p=none"])[0] == "wrong"  # two records
    want = Record("DKIM", "s._domainkey.example.org", "TXT", "v=DKIM1; k=rsa; p=ABC")
    assert judge_dkim(want, ["v=DKIM1; k=rsa; p=AB C"])[0] == "ok"  # spaces inside p= are folding
    assert judge_dkim(want, ["v=DKIM1; k=ed25519; p=ABC"])[0] == "wrong"
    assert judge_dkim(want, ["=;=;;==="])[0] == "wrong"


# ---- signatures ---------------------------------------------------------------------------------

def test_signatures_verify_with_mail_dkim_rsa_and_ed25519(signing_home: Home,
                                                          cli_env: dict[str, str],
                                                          dns_server: DnsServer) -> None:
    set_setting(signing_home, "dkim.algorithms", "rsa+ed25519")
    add_domain(signing_home, "example.org")
    publish(dns_server, mailyard(cli_env, "dns", "records", "example.org").stdout)
    keys = dkim_keys.signing_keys(signing_home, "example.org")
    assert [k.algorithm for k in keys] == ["rsa", "ed25519"]
    signed = sign(MESSAGE, keys) + MESSAGE
    results = {r.split()[0]: r.split()[1] for r in verify(dns_server, signed)}
    assert results["rsa-sha256"] == "pass", results
    # Debian 12's Mail::DKIM (1.20230212) knows no Ed25519 (it says "unsupported algorithm"),
    # so the second signature is checked by dkimpy's verifier against the same DNS server.
    assert results["ed25519-sha256"] == "invalid"
    assert dkimpy_verifies(dns_server, signed, expected=2)
    tampered = signed.replace(b"Subject: a signed message", b"Subject: a changed message")
    assert verify(dns_server, tampered)[0].split()[:2] == ["rsa-sha256", "fail"]
    assert not dkimpy_verifies(dns_server, tampered, expected=2)
    # From is over-signed: one added above the signed one breaks the signature
    forged = b"From: boss@example.org\r\n" + signed
    assert verify(dns_server, forged)[0].split()[:2] == ["rsa-sha256", "fail"]


def dkimpy_verifies(dns: DnsServer, message: bytes, expected: int) -> bool:
    resolver = make_resolver(dns.setting)

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        answers = lookup(resolver, name.decode().rstrip("."), "TXT")
        return answers[0].encode() if answers else None

    verifier = dkim.DKIM(message)
    return all(verifier.verify(idx=i, dnsfunc=txt) for i in range(expected))


def test_a_rotated_key_stops_signing_but_stays_published(signing_home: Home,
                                                         cli_env: dict[str, str],
                                                         dns_server: DnsServer) -> None:
    add_domain(signing_home, "example.org")
    [old] = dkim_keys.signing_keys(signing_home, "example.org")
    out = mailyard(cli_env, "dkim", "rotate", "example.org")
    assert out.returncode == 0, out.stderr
    [new] = dkim_keys.signing_keys(signing_home, "example.org")
    assert new.selector != old.selector
    zone = mailyard(cli_env, "dns", "records", "example.org").stdout
    assert f"{old.selector}._domainkey" in zone and f"{new.selector}._domainkey" in zone
    publish(dns_server, zone)
    assert [r.split()[1] for r in verify(dns_server, sign(MESSAGE, [new]) + MESSAGE)] == ["pass"]
    refused = mailyard(cli_env, "dkim", "remove", "example.org", new.selector)
    assert refused.returncode == 1 and "still signs" in refused.stderr
    assert mailyard(cli_env, "dkim", "remove", "example.org", old.selector).returncode == 0
    assert f"{old.selector}._domainkey" not in mailyard(cli_env, "dns", "records",
                                                        "example.org").stdout


def test_keys_live_in_the_store_only(signing_home: Home) -> None:
    add_domain(signing_home, "example.org")
    [key] = dkim_keys.signing_keys(signing_home, "example.org")
    assert key.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    secret = key.private_pem.splitlines()[1]  # a line of the key's own base64
    for path in Path(signing_home.root).rglob("*"):
        if path.is_file() and not path.name.startswith("store.sqlite"):
            assert secret not in path.read_bytes(), path


def test_which_domain_signs() -> None:
    assert from_domain(MESSAGE) == "example.org"
    assert from_domain(b'From: "a@b.test" <fred@Example.ORG>\r\n\r\n') == "example.org"
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n") is None  # two From fields
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\n") is None  # two authors
    assert from_domain(b"Subject: none\r\n\r\n") is None
    assert signing_domain("example.org", True, ["example.org"]) == "example.org"
    assert signing_domain("example.org", False, ["example.org"]) is None  # not logged in
    assert signing_domain("other.test", True, ["example.org"]) is None  # not the user's domain
    assert headers_to_sign(MESSAGE).count(b"from") == 2
    assert b"received" not in headers_to_sign(b"Received: x\r\n" + MESSAGE)


def test_only_a_proven_sender_gets_its_domain_signed(signing_home: Home, cli_env: dict[str, str],
                                                     dns_server: DnsServer) -> None:
    add_domain(signing_home, "example.org", owner="webuser")
    add_domain(signing_home, "example.net", owner="webuser")  # the same customer's
    add_domain(signing_home, "other.test", owner="someoneelse")
    for domain in ("example.org", "example.net", "other.test"):
        publish(dns_server, mailyard(cli_env, "dns", "records", domain).stdout)
    signer = Signer(signing_home, enabled=True)

    def signed_for(author: str, **envelope: object) -> str:
        env = Envelope(sender=author, recipients=["x@elsewhere.test"], **envelope)  # type: ignore[arg-type]
        header, why = signer.header_for(env, MESSAGE.replace(b"fred@example.org",
                                                             author.encode()))
        return why if header else f"unsigned: {why}"

    assert signed_for("fred@example.org", auth_user="fred@example.org") == "example.org"
    assert signed_for("fred@example.net", auth_user="fred@example.org") == "example.net"
    assert signed_for("boss@other.test", auth_user="fred@example.org").startswith("unsigned")
    assert signed_for("fred@example.org", protocol="local") == "example.org"  # sendmail
    assert signed_for("fred@example.org", client_ip="192.0.2.1").startswith("unsigned")
    assert signed_for("a@remote.test", auth_user="fred@example.org").startswith("unsigned")
    assert Signer(signing_home, enabled=False).header_for(
        Envelope(sender="", recipients=["x@y.test"], auth_user="fred@example.org"),
        MESSAGE)[0] == b""
    header, _ = signer.header_for(
        Envelope(sender="fred@example.org", recipients=["x@y.test"], auth_user="fred@example.org"),
        MESSAGE)
    assert verify(dns_server, header + MESSAGE)[0].split()[:2] == ["rsa-sha256", "pass"]
