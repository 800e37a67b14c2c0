"""What the smtp service does with SPF, DKIM and DMARC: when it checks, what it refuses, what it
writes on the message. Decisions are plain functions of (settings, session facts, results);
`run_checks` is the one place that waits for DNS, in a worker thread.

Only mail from other servers is checked: the smtp service (port 25), neither a relay client
nor a logged-in user (their mail is ours to sign, not to judge), as Postfix's policyd-spf
skips its own networks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..mailauth.dnscheck import make_resolver
from ..mailauth.inbound import (
    SpfResult,
    Verdict,
    authentication_results,
    check_dkim,
    check_spf,
    disposition,
    evaluate_dmarc,
    load_public_suffixes,
    txt_lookup,
    use_resolver_for_spf,
)
from ..queue.envelope import QUARANTINE, TRACE_HEADERS
from . import replies as R

# The service whose clients are other servers.
CHECKED_SERVICE = "smtp"
# The envelope keys delivery reads (defined with the envelope, the interface between them).
TRACE_KEY = TRACE_HEADERS
QUARANTINE_KEY = QUARANTINE

_resolver_in_use: list[str] = []  # the smtp.dns_resolver value pyspf was pointed at


@dataclass(frozen=True)
class AuthPolicy:
    enabled: bool
    act_on_reject: bool
    act_on_quarantine: bool
    exempt_domains: frozenset[str]
    refuse_spf_fail: bool
    hostname: str
    resolver: str

    @classmethod
    def from_settings(cls, settings: dict[str, Any], service: str) -> AuthPolicy:
        return cls(
            enabled=service == CHECKED_SERVICE and bool(settings["mailauth.inbound_checks"]),
            act_on_reject=bool(settings["dmarc.reject"]),
            act_on_quarantine=bool(settings["dmarc.quarantine"]),
            exempt_domains=frozenset(d.lower() for d in settings["dmarc.exempt_domains"]),
            refuse_spf_fail=bool(settings["spf.refuse_fail"]),
            hostname=str(settings["server.hostname"]),
            resolver=str(settings["smtp.dns_resolver"]))


def prepare(service: str) -> None:
    """What the checks read from the interpreter's files, read before the service drops root:
    the public suffix list (DMARC), for the service that checks (whatever the setting says
    now: a reload may turn the checks on)."""
    if service == CHECKED_SERVICE:
        load_public_suffixes()


def applies(policy: AuthPolicy, relay_client: bool, authenticated: bool) -> bool:
    return policy.enabled and not relay_client and not authenticated


def recipient_group(policy: AuthPolicy, group: bool | None,
                    recipient_domain: str) -> tuple[R.Reply | None, bool | None]:
    """(refusal, the transaction's group) for one more recipient: a transaction carries
    either only DMARC-exempt recipients or only others, since one verdict is acted on for
    all of them; the first accepted recipient decides (RFC 5321 allows 452 for "not now")."""
    exempt = recipient_domain.lower() in policy.exempt_domains
    if group is None or group == exempt:
        return None, exempt
    return R.AUTH_CHECK_GROUP, group


def spf_refusal(policy: AuthPolicy, result: SpfResult, client_ip: str) -> R.Reply | None:
    if policy.refuse_spf_fail and result.result == "fail" and result.identity == "mailfrom":
        return R.SPF_FAIL.format(ip=client_ip, domain=result.domain)
    return None


def outcome(policy: AuthPolicy, verdict: Verdict,
            exempt: bool) -> tuple[R.Reply | None, dict[str, Any]]:
    """(refusal, what the envelope carries for delivery) after the checks."""
    extra: dict[str, Any] = {
        TRACE_KEY: authentication_results(policy.hostname, verdict).decode("utf-8", "replace")}
    if exempt:
        return None, extra
    action = disposition(verdict, policy.act_on_reject, policy.act_on_quarantine)
    if action == "reject":
        return R.DMARC_REJECT.format(domain=verdict.dmarc.from_domain), extra
    if action == "quarantine":
        extra[QUARANTINE_KEY] = f"dmarc p={verdict.dmarc.policy} for {verdict.dmarc.from_domain}"
    return None, extra


def _point_spf_at(spec: str) -> None:
    if _resolver_in_use != [spec]:
        use_resolver_for_spf(make_resolver(spec))
        _resolver_in_use[:] = [spec]


async def spf_of(policy: AuthPolicy, client_ip: str, sender: str, helo: str) -> SpfResult:
    def run() -> SpfResult:
        _point_spf_at(policy.resolver)
        return check_spf(client_ip, sender, helo)

    return await asyncio.to_thread(run)


async def run_checks(policy: AuthPolicy, message_path: str, spf_result: SpfResult) -> Verdict:
    """DKIM of the spooled message and DMARC on top of `spf_result` (found at MAIL FROM)."""

    def run() -> Verdict:
        with open(message_path, "rb") as f:
            message = f.read()
        lookup = txt_lookup(make_resolver(policy.resolver))
        dkim_results = check_dkim(message, lookup)
        return Verdict(spf_result, dkim_results,
                       evaluate_dmarc(message, spf_result, dkim_results, lookup))

    return await asyncio.to_thread(run)
