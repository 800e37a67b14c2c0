"""MTA-STS (RFC 8461): a recipient domain's promise that its MX hosts speak verified TLS.

A domain announces a policy with a TXT record `_mta-sts.DOMAIN` (`v=STSv1; id=…`) and serves
it at `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`. Under `mode: enforce` mail goes only
to MX hosts the policy names, over TLS whose certificate verifies for that host; anything
else is a deferral, never clear text. `testing` only reports; `none` withdraws a policy.

Policies are cached in HOME/var/mta-sts/ for their max_age (RFC 8461 5.1) and fetched again
when the TXT record's id changes; a failed fetch keeps an unexpired cached policy, so an
attacker who blocks the fetch cannot downgrade a domain that was seen once.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from .http_client import httpx

# RFC 8461 3.3: the policy body is at most 64 KB; RFC 8461 3.3 also asks senders to bound the
# fetch (Postfix's postfix-mta-sts-resolver uses 10 s, as we do).
MAX_POLICY_OCTETS = 64 * 1024
FETCH_SECONDS = 10.0
# RFC 8461 3.2: max_age is at most 31557600 s (a year).
MAX_AGE_LIMIT = 31_557_600
MODES = ("enforce", "testing", "none")
# A domain's TXT record is looked at again after this long, not before every delivery:
# RFC 8461 5.1 lets a sender use a cached policy until max_age without asking; we still
# notice a new policy id (or a domain that starts publishing one) within five minutes.
TXT_RECHECK_SECONDS = 300.0
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class PolicyError(ValueError):
    """A TXT record or policy file that is not valid MTA-STS."""


@dataclass(frozen=True)
class StsPolicy:
    domain: str
    policy_id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched_at: float

    def expired(self, now: float) -> bool:
        return now > self.fetched_at + self.max_age

    def allows(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_txt(records: list[str]) -> str | None:
    """The id of the one `v=STSv1` record, None when there is none (RFC 8461 3.1: several
    records mean no policy)."""
    found = [r for r in records if r.replace(" ", "").startswith("v=STSv1")]
    if len(found) != 1:
        return None
    tags = dict(part.strip().partition("=")[::2] for part in found[0].split(";") if "=" in part)
    policy_id = tags.get("id", "").strip()
    return policy_id if _ID.match(policy_id) else None


def parse_policy(domain: str, policy_id: str, text: str, now: float) -> StsPolicy:
    """RFC 8461 3.2: `key: value` lines; version, mode and max_age once, mx once or more."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"policy line {line[:60]!r} is not 'key: value'")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("the policy has no 'version: STSv1'")
    mode = (fields.get("mode") or [""])[0]
    if mode not in MODES:
        raise PolicyError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age is not a number of seconds") from None
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} is outside 0..{MAX_AGE_LIMIT}")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("the policy names no mx")
    return StsPolicy(domain, policy_id, mode, mx, max_age, now)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: a name, or `*.` and a name, which covers exactly one more label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


class PolicyCache:
    """The policies seen, on disk (survive restarts) and in memory."""

    def __init__(self, directory: Path, resolver: dns.asyncresolver.Resolver,
                 ca_file: str = "") -> None:
        self.directory = directory
        self.resolver = resolver
        self.ca_file = ca_file
        self._memory: dict[str, StsPolicy] = {}
        self._checked: dict[str, tuple[float, StsPolicy | None, str]] = {}

    def _path(self, domain: str) -> Path:
        return self.directory / f"{domain}.json"

    def cached(self, domain: str) -> StsPolicy | None:
        if domain in self._memory:
            return self._memory[domain]
        try:
            data = json.loads(self._path(domain).read_text())
            policy = StsPolicy(**{**data, "mx": tuple(data["mx"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        self._memory[domain] = policy
        return policy

    def _store(self, policy: StsPolicy) -> None:
        self._memory[policy.domain] = policy
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self._path(policy.domain).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(policy)))
            os.replace(tmp, self._path(policy.domain))
        except OSError:
            pass  # kept in memory; after a restart the policy is fetched again

    async def policy(self, domain: str) -> tuple[StsPolicy | None, str]:
        """(the policy in force for `domain`, how it was found) — None when it has none."""
        domain = domain.lower().rstrip(".")
        now = time.time()
        recent = self._checked.get(domain)
        if recent is not None and now - recent[0] < TXT_RECHECK_SECONDS and (
                recent[1] is None or not recent[1].expired(now)):
            return recent[1], recent[2]
        found = await self._policy(domain, now)
        self._checked[domain] = (now, *found)
        return found

    async def _policy(self, domain: str, now: float) -> tuple[StsPolicy | None, str]:
        cached = self.cached(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT", search=False,
                                                 raise_on_no_answer=False)
            records = [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            records = []
        except dns.exception.DNSException as exc:
            return cached, f"TXT lookup failed ({type(exc).__name__}); cached policy used"
        policy_id = parse_txt(records)
        if policy_id is None:
            return cached, "no MTA-STS record" + ("; cached policy used" if cached else "")
        if cached is not None and cached.policy_id == policy_id:
            return cached, "cached policy, same id"
        try:
            text = await self._fetch(domain)
            fresh = parse_policy(domain, policy_id, text, now)
        except (PolicyError, httpx.HTTPError, ssl.SSLError, OSError, ValueError,
                dns.exception.DNSException) as exc:
            return cached, f"policy fetch failed: {exc}" + ("; cached policy used"
                                                           if cached else "")
        self._store(fresh)
        return fresh, "policy fetched"

    async def _fetch(self, domain: str) -> str:
        """GET the policy over HTTPS, verified for mta-sts.DOMAIN (RFC 8461 3.3), connecting
        to the address our resolver gives, so no other resolver is ever asked."""
        host = f"mta-sts.{domain}"
        address = await self._address(host)
        context = ssl.create_default_context(cafile=self.ca_file or None)
        url = (f"https://[{address}]" if ":" in address else f"https://{address}") + \
            "/.well-known/mta-sts.txt"
        async with httpx.AsyncClient(verify=context, timeout=FETCH_SECONDS,
                                     follow_redirects=False, trust_env=False) as client:
            async with client.stream("GET", url, headers={"Host": host},
                                     extensions={"sni_hostname": host}) as response:
                if response.status_code != 200:
                    raise PolicyError(f"{host} answered HTTP {response.status_code}")
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/plain"):
                    raise PolicyError(f"{host} sent {kind or 'no content type'}, not text/plain")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_POLICY_OCTETS:
                        raise PolicyError(f"the policy is longer than {MAX_POLICY_OCTETS} octets")
        return body.decode("utf-8", "replace")

    async def _address(self, host: str) -> str:
        for rtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            for rr in answer:
                return str(rr.address)
        raise PolicyError(f"{host} has no address")
