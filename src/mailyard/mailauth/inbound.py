"""Checks of mail arriving on port 25: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489).

pyspf evaluates SPF and dkimpy verifies signatures; DMARC is evaluated here, on top of them,
because no maintained Python DMARC evaluator exists (checkdmarc only inspects records): it is
the lookup of one record and the alignment rules of RFC 7489 3.1 and 6.6, with the
organizational domain from publicsuffixlist (which ships the list, so no download at run time).

Every DNS answer is hostile: each check turns what it meets into a result (`temperror`,
`permerror`, `fail`, ...) and never raises. The functions are synchronous (both libraries
are); the SMTP service runs them in a worker thread.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import authres
import authres.dmarc
import dkim
import dns.exception
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from .dkim_sign import from_domain

# RFC 7208 4.6.4: at most 10 DNS-querying terms per check (pyspf's MAX_LOOKUP); each lookup
# gets this long, so a check ends after at most about 10 x this.
SPF_LOOKUP_SECONDS = 5.0
# A message with more signatures than this has only the first ones verified: each costs DNS
# lookups and an RSA operation (Postfix's OpenDKIM default MaximumSignaturesToVerify is 3).
MAX_SIGNATURES_VERIFIED = 5
# RFC 7489 6.6.3: a DMARC record is looked up at the From domain, then at its organizational
# domain; RFC 7489 6.3 lists its tags.
_DMARC_POLICIES = ("none", "quarantine", "reject")

# The public suffix list, read by load_public_suffixes: about 1.2 MiB in memory, so only where
# DMARC is evaluated (issue 20).
_PSL: list[PublicSuffixList] = []

TxtLookup = Callable[[str], list[str]]


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass, fail, softfail, neutral, none, temperror, permerror
    domain: str  # the domain checked: the MAIL FROM's, or the HELO name's for a null sender
    identity: str  # "mailfrom" or "helo"
    explanation: str = ""


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral (unverifiable), temperror, permerror
    domain: str  # d=
    selector: str  # s=
    detail: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str
    policy: str = "none"  # what the domain asks for failing mail: none, quarantine, reject
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    spf: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult = DmarcResult("none", "")


# ---- DNS ---------------------------------------------------------------------------------------

def txt_lookup(resolver: dns.resolver.Resolver) -> TxtLookup:
    """A TXT lookup through `resolver`: the joined strings of each record; [] for no record.
    Raises dns.exception.DNSException for timeouts and server failures."""

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]

    return lookup


def use_resolver_for_spf(resolver: dns.resolver.Resolver) -> None:
    """Point pyspf's lookups at `resolver` (pyspf reads DNS through its module function
    DNSLookup, which it documents as replaceable; the SMTP service calls this at start)."""

    def lookup(name: str, qtype: str, tcpfallback: bool = True,
               timeout: float = SPF_LOOKUP_SECONDS) -> list[tuple[tuple[str, str], object]]:
        out: list[tuple[tuple[str, str], object]] = []
        try:
            answer = resolver.resolve(name, qtype, search=False, lifetime=timeout,
                                      raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return out
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {type(exc).__name__}") from None
        for rr in answer:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rr.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rr.preference, rr.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rr.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rr.strings))
        return out

    spf.DNSLookup = lookup


# ---- SPF ---------------------------------------------------------------------------------------

def check_spf(client_ip: str, mail_from: str, helo: str) -> SpfResult:
    """SPF of the MAIL FROM, or of the HELO name when the sender is null (RFC 7208 2.4)."""
    identity = "mailfrom" if mail_from else "helo"
    sender = mail_from or f"postmaster@{helo}"
    domain = sender.rpartition("@")[2].lower()
    try:
        result, explanation = spf.check2(i=client_ip, s=sender, h=helo or domain,
                                         timeout=SPF_LOOKUP_SECONDS * spf.MAX_LOOKUP)
    except Exception as exc:  # pyspf raises for some malformed input instead of answering
        return SpfResult("permerror", domain, identity, f"{type(exc).__name__}")
    return SpfResult(str(result).lower(), domain, identity, str(explanation)[:200])


# ---- DKIM --------------------------------------------------------------------------------------

def _signature_tags(message: bytes) -> list[tuple[str, str]]:
    """(d=, s=) of each DKIM-Signature field, in order (for the result when a check fails)."""
    end = message.find(b"\r\n\r\n")
    head = (message if end < 0 else message[:end + 2]).decode("utf-8", "replace")
    out = []
    for value in re.findall(r"^dkim-signature[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head,
                            re.IGNORECASE | re.MULTILINE):
        tags = dict(re.findall(r"([a-z]+)\s*=\s*([^;]*)", value.replace("\r\n", "")))
        out.append((tags.get("d", "").strip().lower(), tags.get("s", "").strip()))
    return out


def check_dkim(message: bytes, lookup: TxtLookup) -> list[DkimResult]:
    """One result per DKIM-Signature (at most MAX_SIGNATURES_VERIFIED)."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        answers = lookup(name.decode("ascii", "replace").rstrip("."))
        return answers[0].encode() if answers else None

    results = []
    for index, (domain, selector) in enumerate(_signature_tags(message)[:MAX_SIGNATURES_VERIFIED]):
        verifier = dkim.DKIM(message)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except dns.exception.DNSException as exc:
            results.append(DkimResult("temperror", domain, selector, type(exc).__name__))
            continue
        except Exception as exc:  # dkimpy raises on records and signatures it cannot use
            # a body that no longer matches its hash is a failed signature (RFC 6376 6.1.3),
            # anything else (a key that is not a key, a broken tag) a permanent error
            state = "fail" if "body hash mismatch" in str(exc) else "permerror"
            results.append(DkimResult(state, domain, selector, str(exc)[:200]))
            continue
        results.append(DkimResult("pass" if ok else "fail", domain, selector))
    return results


# ---- DMARC -------------------------------------------------------------------------------------

def load_public_suffixes() -> None:
    """Read the public suffix list (a file of the publicsuffixlist package) unless it is read.

    The smtp service calls this at start, before it drops root (the file may be out of the
    mail owner's reach after); the submission service, which checks no mail, never does.
    Anything else reads it at its first organizational_domain."""
    if not _PSL:
        _PSL.append(PublicSuffixList())


def organizational_domain(domain: str) -> str:
    load_public_suffixes()
    return _PSL[0].privatesuffix(domain.lower()) or domain.lower()


def aligned(a: str, b: str, strict: bool) -> bool:
    """RFC 7489 3.1: strict means the same name, relaxed the same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else organizational_domain(a) == organizational_domain(b)


def parse_dmarc(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record, or None if it is not one (v=DMARC1 must come first)."""
    parts = [p.strip() for p in text.split(";")]
    tags: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            return None
        tags.setdefault(name.strip().lower(), value.strip())
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    return tags


def _record(lookup: TxtLookup, domain: str) -> tuple[dict[str, str] | None, str]:
    """The DMARC record of `domain` ("" detail) or None with why; raises DNSException."""
    records = [t for t in (parse_dmarc(r) for r in lookup(f"_dmarc.{domain}")) if t is not None]
    if len(records) != 1:
        return None, "no record" if not records else "several records"
    return records[0], ""


def evaluate_dmarc(message: bytes, spf_result: SpfResult, dkim_results: list[DkimResult],
                   lookup: TxtLookup, sample: Callable[[], float] = random.random) -> DmarcResult:
    author = from_domain(message)
    if author is None:
        return DmarcResult("permerror", "", detail="not exactly one From address")
    org = organizational_domain(author)
    try:
        tags, why = _record(lookup, author)
        if tags is None and org != author:
            tags, why = _record(lookup, org)
    except dns.exception.DNSException as exc:
        return DmarcResult("temperror", author, detail=type(exc).__name__)
    if tags is None:
        return DmarcResult("none", author, detail=why)
    policy = tags.get("p", "")
    if author != org and tags.get("sp") in _DMARC_POLICIES:
        policy = tags["sp"]
    if policy not in _DMARC_POLICIES:
        # RFC 7489 6.6.3: a record with a bad p= but a rua= is taken as p=none; without
        # one it is not a DMARC record at all
        return DmarcResult("none" if "rua" not in tags else "fail", author,
                           detail=f"invalid p={policy or '(missing)'}")
    spf_ok = (spf_result.result == "pass" and spf_result.identity == "mailfrom"
              and aligned(spf_result.domain, author, tags.get("aspf") == "s"))
    dkim_ok = any(r.result == "pass" and aligned(r.domain, author, tags.get("adkim") == "s")
                  for r in dkim_results)
    if spf_ok or dkim_ok:
        return DmarcResult("pass", author, policy, "spf aligned" if spf_ok else "dkim aligned")
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    if pct < 100 and sample() * 100 >= pct:
        # RFC 7489 6.6.4: outside the sample, the next less strict policy applies
        policy = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult("fail", author, policy, "neither SPF nor DKIM aligned")


def check_message(message: bytes, client_ip: str, mail_from: str, helo: str,
                  resolver: dns.resolver.Resolver) -> Verdict:
    lookup = txt_lookup(resolver)
    spf_result = check_spf(client_ip, mail_from, helo)
    dkim_results = check_dkim(message, lookup)
    return Verdict(spf_result, dkim_results,
                   evaluate_dmarc(message, spf_result, dkim_results, lookup))


# ---- what to do, and the header ----------------------------------------------------------------

def disposition(verdict: Verdict, act_on_reject: bool, act_on_quarantine: bool) -> str:
    """accept, quarantine or reject: the domain's DMARC policy where the node acts on it."""
    if verdict.dmarc.result != "fail":
        return "accept"
    if verdict.dmarc.policy == "reject" and act_on_reject:
        return "reject"
    if verdict.dmarc.policy in ("reject", "quarantine") and act_on_quarantine:
        return "quarantine"
    return "accept"


def authentication_results(hostname: str, verdict: Verdict) -> bytes:
    """The Authentication-Results field (RFC 8601) for the top of the message, CRLF-ended."""
    spf_result = verdict.spf
    results: list[object] = []
    if spf_result.identity == "mailfrom":
        results.append(authres.SPFAuthenticationResult(
            result=spf_result.result, smtp_mailfrom=spf_result.domain))
    else:
        results.append(authres.SPFAuthenticationResult(
            result=spf_result.result, smtp_helo=spf_result.domain))
    if verdict.dkim:
        for r in verdict.dkim:
            results.append(authres.DKIMAuthenticationResult(
                result=r.result, header_d=r.domain or None, header_s=r.selector or None))
    else:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    results.append(authres.dmarc.DMARCAuthenticationResult(
        result=verdict.dmarc.result, header_from=verdict.dmarc.from_domain or None,
        policy=verdict.dmarc.policy if verdict.dmarc.result == "fail" else None))
    header = str(authres.AuthenticationResultsHeader(authserv_id=hostname, results=results))
    return header.encode("utf-8", "replace").replace(b"\n", b"\r\n") + b"\r\n"


def claims_our_host(field_value: str, hostname: str) -> bool:
    """True when an Authentication-Results value names `hostname` as its author (RFC 8601
    5: such fields from outside must be removed, or a sender could forge our verdict)."""
    authserv = field_value.strip().split(";", 1)[0].split()[0:1]
    return bool(authserv) and authserv[0].lower().rstrip(".") == hostname.lower().rstrip(".")
