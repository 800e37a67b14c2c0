"""A live check of a domain's mail records: what is published, what is missing, what is wrong.

Every answer from DNS is treated as hostile: oversized, malformed or looping records give a
clear finding, never an exception or a hang (each query is bounded by the resolver's
lifetime). The judging functions are plain functions of the answers, tested without a network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import dns.exception
import dns.resolver
import dns.reversename

from ..settings.types import parse_resolver_setting
from .records import Record

# Seconds one whole lookup may take (all retries): a check of one domain makes about ten.
LOOKUP_LIFETIME = 5.0
# The states of a finding; only MX, SPF, DKIM and DMARC decide whether the check passes.
OK, MISSING, WRONG, WARNING = "ok", "missing", "wrong", "warning"


class LookupError_(RuntimeError):
    """A lookup that failed for another reason than "no such record" (timeout, SERVFAIL)."""


@dataclass(frozen=True)
class Finding:
    kind: str
    name: str
    state: str  # ok, missing, wrong, warning
    published: str
    detail: str = ""
    required: bool = False


def make_resolver(spec: str) -> dns.resolver.Resolver:
    """A resolver for the `smtp.dns_resolver` setting ("" for the system's)."""
    server = parse_resolver_setting(spec)
    if server is None:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
    resolver.lifetime = LOOKUP_LIFETIME
    resolver.timeout = LOOKUP_LIFETIME
    return resolver


def lookup(resolver: dns.resolver.Resolver, name: str, rtype: str) -> list[str]:
    """The answers' texts ([] for NXDOMAIN or no data); TXT strings are joined as RFC 7208
    3.3 says. Other failures raise LookupError_ with what happened."""
    try:
        answer = resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise LookupError_(f"{rtype} {name}: {type(exc).__name__}: {exc}") from None
    out = []
    for rr in answer:
        if rtype == "TXT":
            out.append(b"".join(rr.strings).decode("utf-8", "replace"))
        else:
            out.append(rr.to_text())
    return out


# ---- judging what is published -----------------------------------------------------------------

def _same_host(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def judge_mx(hostname: str, published: list[str]) -> tuple[str, str]:
    hosts = [p.split()[-1] for p in published if p.split()]
    if not hosts:
        return MISSING, f"no MX record; add one naming {hostname}"
    if any(_same_host(h, hostname) for h in hosts):
        return OK, ""
    return WRONG, f"the MX hosts ({', '.join(hosts)}) do not include {hostname}"


def _tags(text: str) -> dict[str, str] | None:
    """The tag=value pairs of a DKIM or DMARC record; None when it is not of that form."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or name in tags:
            return None
        tags[name] = re.sub(r"\s+", "", value)
    return tags


def judge_spf(hostname: str, published: list[str]) -> tuple[str, str]:
    spf = [p for p in published if p.lower() == "v=spf1" or p.lower().startswith("v=spf1 ")]
    if not spf:
        return MISSING, "no SPF record (a TXT starting with v=spf1)"
    if len(spf) > 1:
        return WRONG, f"{len(spf)} SPF records: receivers treat that as an error (RFC 7208 4.5)"
    terms = spf[0].lower().split()[1:]
    allowed = {"mx", "+mx", f"a:{hostname.lower()}", f"+a:{hostname.lower()}"}
    if not allowed & set(terms) and not any(t.startswith(("include:", "+include:", "redirect="))
                                            for t in terms):
        return WRONG, f"the SPF record does not allow this node ({hostname}) to send"
    if not any(t in ("-all", "~all") or t.startswith("redirect=") for t in terms):
        return WRONG, "the SPF record does not end with -all or ~all, so it allows anyone"
    return OK, ""


def judge_dkim(wanted: Record, published: list[str]) -> tuple[str, str]:
    if not published:
        return MISSING, f"no DKIM key at {wanted.name}"
    want = _tags(wanted.value) or {}
    for text in published:
        tags = _tags(text)
        if tags is None:
            continue
        if tags.get("p") == want.get("p") and tags.get("k", "rsa") == want.get("k", "rsa"):
            return OK, ""
    return WRONG, "the published key is not this node's key for the selector"


def judge_dmarc(policy: str, published: list[str]) -> tuple[str, str]:
    records = [p for p in published if p.replace(" ", "").upper().startswith("V=DMARC1")]
    if not records:
        return MISSING, "no DMARC record (a TXT at _dmarc starting with v=DMARC1)"
    if len(records) > 1:
        return WRONG, f"{len(records)} DMARC records: receivers ignore them all (RFC 7489 6.6.3)"
    tags = _tags(records[0])
    if tags is None or tags.get("p") not in ("none", "quarantine", "reject"):
        return WRONG, "the DMARC record has no valid p= tag (none, quarantine or reject)"
    if tags["p"] != policy:
        return OK, f"p={tags['p']} (the setting dns.dmarc_policy suggests p={policy})"
    return OK, ""


def judge_present(kind: str, prefix: str, published: list[str]) -> tuple[str, str]:
    if any(p.replace(" ", "").lower().startswith(prefix.lower()) for p in published):
        return OK, ""
    return WARNING, f"no {kind} record (optional)"


# ---- the check ---------------------------------------------------------------------------------

def check_domain(resolver: dns.resolver.Resolver, domain: str, hostname: str,
                 wanted: list[Record], dmarc_policy: str) -> list[Finding]:
    findings = []
    for record in wanted:
        try:
            published = lookup(resolver, record.name, record.rtype)
        except LookupError_ as exc:
            state = WRONG if record.required else WARNING
            findings.append(Finding(record.kind, record.name, state, "", f"lookup failed: {exc}",
                                    record.required))
            continue
        if record.kind == "MX":
            state, detail = judge_mx(hostname, published)
        elif record.kind == "SPF":
            state, detail = judge_spf(hostname, published)
        elif record.kind == "DKIM":
            state, detail = judge_dkim(record, published)
        elif record.kind == "DMARC":
            state, detail = judge_dmarc(dmarc_policy, published)
        else:
            state, detail = judge_present(record.kind, record.value.split(";")[0], published)
        if not record.required and state in (MISSING, WRONG):
            state = WARNING
        findings.append(Finding(record.kind, record.name, state, " | ".join(published)[:300],
                                detail, record.required))
    findings.append(_mta_sts(resolver, domain))
    findings.extend(_reverse_dns(resolver, hostname))
    return findings


def _mta_sts(resolver: dns.resolver.Resolver, domain: str) -> Finding:
    name = f"_mta-sts.{domain}"
    try:
        published = lookup(resolver, name, "TXT")
    except LookupError_ as exc:
        return Finding("MTA-STS", name, WARNING, "", f"lookup failed: {exc}")
    state, detail = judge_present("MTA-STS", "v=STSv1", published)
    return Finding("MTA-STS", name, state, " | ".join(published)[:300], detail)


def _reverse_dns(resolver: dns.resolver.Resolver, hostname: str) -> list[Finding]:
    """The guide's caution (4.2): the hostname's addresses should point back to it."""
    out = []
    addresses: list[str] = []
    for rtype in ("A", "AAAA"):
        try:
            addresses += lookup(resolver, hostname, rtype)
        except LookupError_ as exc:
            out.append(Finding("PTR", hostname, WARNING, "", f"lookup failed: {exc}"))
    if not addresses:
        out.append(Finding("PTR", hostname, WARNING, "",
                           f"{hostname} has no address in DNS, so its reverse DNS cannot match"))
    for address in addresses:
        try:
            name = dns.reversename.from_address(str(ipaddress.ip_address(address))).to_text()
            names = lookup(resolver, name, "PTR")
        except (LookupError_, ValueError) as exc:
            out.append(Finding("PTR", address, WARNING, "", f"lookup failed: {exc}"))
            continue
        if any(_same_host(n, hostname) for n in names):
            out.append(Finding("PTR", address, OK, " | ".join(names)))
        else:
            out.append(Finding("PTR", address, WARNING, " | ".join(names),
                               f"the reverse DNS of {address} does not name {hostname}"))
    return out


def passed(findings: list[Finding]) -> bool:
    """True when every required record is as wanted (warnings do not count)."""
    return all(f.state == OK for f in findings if f.required)

