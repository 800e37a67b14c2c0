"""Every accept/refuse decision of the SMTP servers, as plain functions of (policy, session, input).

`Policy` is one service's settings, parsed once per (re)load. The functions below never touch
the network or the store: what they need from the store (is the domain ours, does the mailbox
exist) is looked up by the driver and passed in, so each decision is testable on its own.
Order at SMTP time (DESIGN.md): connection cap, RBL, greeting, HELO/EHLO, AUTH and TLS mode,
MAIL FROM (mode, parameters, size, inbound blacklist, the login's right to the sender),
RCPT TO (limit, routing tricks, inbound blacklist, local domain or relay, mailbox exists and
is active or postmaster, outbound blacklist), DATA (size, line length, hop count, SMTP-level
filters). Every address is compared in its canonical form (`address.canonical`).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .. import blacklist, quota
from ..address import Path
from ..mailauth import srs
from . import ratelimit as RL
from . import replies as R
from .auth import MECHANISMS
from .lines import MAX_TEXT_LINE
from .protocol import Session

# RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per message; we accept
# exactly that many (Postfix's smtpd_recipient_limit is 1000, qmail has none) and answer 452
# to the rest, which tells the client to send them in another transaction.
MAX_RECIPIENTS = 100
# RFC 5321 4.5.1: every domain must accept mail for postmaster, even without a domain part.
POSTMASTER = "postmaster"
# Postfix's hopcount_limit (50): a message with this many Received headers, ours included, is
# refused as looping. RFC 5321 6.3 asks for such a limit and names 100 as the least one for
# "a simple counter"; counting ours too, as Postfix does, 50 has served Postfix since 1998.
MAX_RECEIVED_HEADERS = 50
_MB = 1024 * 1024
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AuthMode:
    """One of the registry's AUTH_MODES: whether AUTH and TLS are off, optional or required."""

    auth: str  # no | optional | withtls | required
    tls: str  # no | optional | required

    @classmethod
    def parse(cls, value: str) -> AuthMode:
        auth, _, tls = value.partition("/")
        return cls(auth.removeprefix("auth_"), tls.removeprefix("tls_"))


@dataclass(frozen=True)
class Policy:
    """The settings one SMTP service decides with."""

    service: str  # "smtp" or "submission"
    hostname: str
    greeting: str
    default_domain: str
    auth_mode: AuthMode
    max_connections: int
    timeout: int
    size_limit: int  # octets; 0 means no limit
    relay_networks: tuple[_IPNetwork, ...]
    inbound_blacklist: tuple[str, ...]
    outbound_blacklist: tuple[str, ...]
    rbl_zones: tuple[str, ...]
    dns_resolver: str
    smtp_scanning: bool  # spam.smtp_scanning or virus.smtp_scanning
    tls_available: bool = True
    postmaster: str = ""  # where postmaster@ of our domains goes; "" = postmaster@hostname
    sender_login_match: bool = True  # logged-in users send only as addresses they own
    sender_owner_domains: bool = True  # ... which includes every domain of their owner
    session_lifetime: float = 3600.0  # seconds a session may last in all
    min_data_rate: int = 0  # bytes/s a client must keep up in DATA; 0: no check

    @property
    def own_domains(self) -> tuple[str, ...]:
        """Domains local even without a domain row: the hostname and the default domain."""
        return (self.hostname.lower(), self.default_domain.lower())

    @property
    def postmaster_address(self) -> str:
        return self.postmaster or f"{POSTMASTER}@{self.hostname.lower()}"

    @classmethod
    def from_settings(cls, settings: dict[str, Any], service: str,
                      tls_available: bool = True) -> Policy:
        hostname = str(settings["server.hostname"])
        return cls(
            service=service,
            hostname=hostname,
            greeting=str(settings.get("smtp.greeting") or "") or hostname,
            default_domain=str(settings["server.default_domain"]),
            auth_mode=AuthMode.parse(str(settings[f"{service}.auth_mode"])),
            max_connections=int(settings["smtp.max_connections"]),
            timeout=int(settings["smtp.timeout"]),
            session_lifetime=float(settings["smtp.session_lifetime"]),
            min_data_rate=int(settings["smtp.min_data_rate"]),
            size_limit=int(settings["smtp.message_size_mb"]) * _MB,
            relay_networks=tuple(ipaddress.ip_network(n, strict=False)
                                 for n in settings["smtp.relay_networks"]),
            inbound_blacklist=tuple(settings["smtp.inbound_blacklist"]),
            outbound_blacklist=tuple(settings["smtp.outbound_blacklist"]),
            rbl_zones=tuple(settings["smtp.rbl_zones"]),
            dns_resolver=str(settings.get("smtp.dns_resolver") or ""),
            smtp_scanning=bool(settings.get("spam.smtp_scanning"))
            or bool(settings.get("virus.smtp_scanning")),
            tls_available=tls_available,
            postmaster=str(settings["server.postmaster"]),
            sender_login_match=bool(settings["smtp.sender_login_match"]),
            sender_owner_domains=bool(settings["smtp.sender_owner_domains"]),
        )


# ---- who the client is -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # asked per command; clients come back
def in_networks(ip: str, networks: tuple[_IPNetwork, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


def may_relay(policy: Policy, session: Session) -> bool:
    """Logged in, or in a relay network: may send to any domain; counts as a local user."""
    return bool(session.auth_user) or in_networks(session.client_ip, policy.relay_networks)


def rbl_applies(policy: Policy, session: Session) -> bool:
    """DNSBLs are asked on port 25 only, and never about our own relay networks."""
    return (policy.service == "smtp" and bool(policy.rbl_zones)
            and not in_networks(session.client_ip, policy.relay_networks))


def protocol_name(session: Session) -> str:
    """The `with` word of the Received header (RFC 3848): SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not session.esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if session.tls else "") + ("A" if session.auth_user else "")


# ---- connection, greeting, EHLO ------------------------------------------------------------------


def connection_refused(policy: Policy, active: int) -> R.Reply | None:
    """`active` counts this connection too; the one over the cap is told 421 at once."""
    if active > policy.max_connections:
        return R.TOO_MANY_CONNECTIONS.format(hostname=policy.hostname)
    return None


@functools.lru_cache(maxsize=64)
def _filled(reply: R.Reply, key: str, value: str) -> R.Reply:
    """`reply` with its one placeholder filled: made once per value, not per session (the
    greeting, HELO and QUIT replies of a policy are the same for every client)."""
    return reply.format(**{key: value})


def greeting(policy: Policy) -> R.Reply:
    return _filled(R.GREETING, "greeting", policy.greeting)


def offers_starttls(policy: Policy, session: Session) -> bool:
    return policy.tls_available and policy.auth_mode.tls != "no" and not session.tls


def offers_auth(policy: Policy, session: Session) -> bool:
    mode = policy.auth_mode.auth
    return mode == "optional" or (mode in ("withtls", "required") and session.tls)


def helo_reply(policy: Policy) -> R.Reply:
    return _filled(R.HELO_OK, "hostname", policy.hostname)


def ehlo_reply(policy: Policy, session: Session) -> R.Reply:
    return _ehlo(policy.hostname, policy.size_limit, offers_starttls(policy, session),
                 offers_auth(policy, session))


@functools.lru_cache(maxsize=64)
def _ehlo(hostname: str, size_limit: int, starttls: bool, auth: bool) -> R.Reply:
    lines = [hostname, "PIPELINING"]
    lines.append(f"SIZE {size_limit}" if size_limit else "SIZE")
    lines += ["8BITMIME", "ENHANCEDSTATUSCODES"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH " + " ".join(MECHANISMS))
    return R.EHLO_OK.format(lines="\n".join(lines))


def starttls_reply(policy: Policy, session: Session) -> R.Reply:
    if not offers_starttls(policy, session):
        return R.NOT_OFFERED.format(command="STARTTLS")
    return R.READY_FOR_TLS


def auth_start_refusal(policy: Policy, session: Session, mechanism: str) -> R.Reply | None:
    """None when the AUTH exchange may begin."""
    if not offers_auth(policy, session):
        if policy.auth_mode.auth in ("withtls", "required") and offers_starttls(policy, session):
            return R.AUTH_NEEDS_TLS  # RFC 4954 6: 538 when encryption is needed first
        return R.NOT_OFFERED.format(command="AUTH")
    if mechanism not in MECHANISMS:
        return R.UNKNOWN_MECHANISM.format(mechanism=mechanism)
    return None


def mode_refusal(policy: Policy, session: Session) -> R.Reply | None:
    """TLS or AUTH that the mode requires and the session lacks (checked at MAIL)."""
    if policy.auth_mode.tls == "required" and not session.tls:
        return R.TLS_REQUIRED
    if policy.auth_mode.auth == "required" and not session.auth_user:
        return R.AUTH_REQUIRED
    return None


# ---- addresses -----------------------------------------------------------------------------------


def blacklist_match(patterns: tuple[str, ...], address: str) -> str | None:
    """The first blacklist entry matching the address (rules in `mailyard.blacklist`)."""
    return blacklist.first_match(patterns, address)


def routing_trick(path: Path) -> bool:
    """`user%other@local`, `"user@other"@local`, `@local:user@other`, `other!user@local`,
    `user@other@local`: routing syntax that turned old servers into open relays."""
    local = path.unquoted_local
    return bool(path.source_route) or any(ch in local for ch in "%!@")


def _plain(path: Path) -> str:
    """The address as the blacklists, the store and the queue see it: the canonical form
    (`address.canonical`), so that `"joe"@x` and `joe@x` are one address and `" joe"@x`
    (which keeps its quotes) is never taken for joe@x."""
    return path.canonical


def mail_from(policy: Policy, session: Session, path: Path,
              params: dict[str, str | None]) -> tuple[R.Reply, Path | None]:
    """The reply to MAIL FROM and the sender as accepted (None when refused)."""
    refusal = mode_refusal(policy, session)
    if refusal:
        return refusal, None
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                return R.SYNTAX_ERROR.format(detail="SIZE needs a number of octets"), None
            if policy.size_limit and int(value) > policy.size_limit:
                return R.MESSAGE_TOO_BIG.format(limit=policy.size_limit), None
        elif key == "BODY":
            if (value or "").upper() not in ("7BIT", "8BITMIME"):
                return R.SYNTAX_ERROR.format(detail="BODY is 7BIT or 8BITMIME"), None
        elif key == "AUTH":
            pass  # RFC 4954 5: accepted; we trust no one's word for who sent it
        else:
            return R.BAD_PARAMETER.format(param=key), None
    if path.source_route:
        path = Path(path.local, path.domain, "", path.quoted)  # RFC 5321 C: ignore the route
    if "@" in path.unquoted_local and not path.quoted:
        return R.BAD_ADDRESS.format(detail=f"{path} has more than one @"), None
    if not path.is_null and not path.domain:
        if not may_relay(policy, session):
            return R.SENDER_NEEDS_DOMAIN.format(address=path), None
        path = path.with_domain(policy.default_domain)  # guide 4.2: the default domain
    hit = blacklist_match(policy.inbound_blacklist, _plain(path))
    if hit:
        return R.INBOUND_BLACKLIST.format(address=path), None
    return R.SENDER_OK, path


def rcpt_precheck(policy: Policy, session: Session, path: Path,
                  params: dict[str, str | None]) -> R.Reply | Path:
    """What can be decided about RCPT TO before the store is asked: a refusal, or the
    recipient (with a domain) whose domain and mailbox the driver must look up."""
    if params:
        return R.BAD_PARAMETER.format(param=next(iter(params)))
    if len(session.recipients) >= MAX_RECIPIENTS:
        return R.TOO_MANY_RECIPIENTS.format(limit=MAX_RECIPIENTS)
    if routing_trick(path):
        return R.RELAY_TRICK.format(address=path)
    if not path.domain:
        if is_postmaster(path):
            path = Path(POSTMASTER, policy.default_domain)
        elif may_relay(policy, session):
            path = path.with_domain(policy.default_domain)
        else:
            return R.BAD_ADDRESS.format(detail=f"{path} needs a domain")
    if blacklist_match(policy.inbound_blacklist, _plain(path)):
        return R.INBOUND_BLACKLIST.format(address=path)
    return path


def is_local_domain(policy: Policy, domain: str, *, stored: bool) -> bool:
    """A domain of the store (`stored`), or the node's own hostname or default domain, which
    are always local: mail for them must never go out to the network and come back."""
    return stored or domain.lower() in policy.own_domains


def is_postmaster(path: Path) -> bool:
    return path.canonical_local.lower() == POSTMASTER


def rcpt_to(policy: Policy, session: Session, path: Path, *, local_domain: bool,
            mailbox_exists: bool, mailbox_active: bool = True) -> R.Reply:
    """The reply to RCPT TO once the store has said whether the domain is ours and whether
    the mailbox (or alias) exists and is active.

    For a local domain only what will be delivered is accepted (no backscatter later): a
    local part that stays quoted (spaces, specials) can never be a mailbox here (550 5.1.1),
    a disabled mailbox is 550 5.2.1, and postmaster is accepted with no mailbox of its own
    (RFC 5321 4.5.1; `postmaster_target` says where it goes)."""
    if is_local_domain(policy, path.domain, stored=local_domain):
        if not path.names_local_mailbox:
            return R.NO_SUCH_USER.format(address=path)
        if mailbox_exists:
            if not mailbox_active:
                return R.MAILBOX_DISABLED.format(address=path)
        elif not is_postmaster(path):
            return R.NO_SUCH_USER.format(address=path)
    elif not may_relay(policy, session):
        return R.RELAY_DENIED.format(address=path)
    if may_relay(policy, session) and blacklist_match(policy.outbound_blacklist, _plain(path)):
        return R.OUTBOUND_BLACKLIST.format(address=path)
    return R.RECIPIENT_OK


def plain_address(path: Path) -> str:
    """The address handed to the queue for a path: its canonical form."""
    return _plain(path)


def postmaster_target(policy: Policy, path: Path, *, local_domain: bool,
                      mailbox_exists: bool) -> Path | None:
    """For postmaster@ a local domain that has no mailbox or alias of that name: the mailbox
    it is delivered to instead (setting server.postmaster). None for any other recipient."""
    if (mailbox_exists or not is_postmaster(path)
            or not is_local_domain(policy, path.domain, stored=local_domain)):
        return None
    local, _, domain = policy.postmaster_address.rpartition("@")
    return Path(local, domain.lower())


def postmaster_reply(policy: Policy, target: Path, *, local_domain: bool, mailbox_exists: bool,
                     mailbox_active: bool) -> R.Reply:
    """Whether the postmaster mailbox can take the message: it must be an active mailbox (or
    alias) of ours. When it is not, the sender is told to try again (451 4.3.5: our setup is
    wrong), never refused and never relayed to the network."""
    if (is_local_domain(policy, target.domain, stored=local_domain) and mailbox_exists
            and mailbox_active):
        return R.RECIPIENT_OK
    return R.POSTMASTER_MISSING.format(address=target)


# ---- sender authorization (Postfix's reject_sender_login_mismatch) ------------------------------


def sender_check_needed(policy: Policy, session: Session, path: Path | None) -> bool:
    """Whether MAIL FROM must be checked against the login: a logged-in session, a sender
    other than <>, and the setting on."""
    return (policy.sender_login_match and bool(session.auth_user) and path is not None
            and not path.is_null)


def sender_login_refusal(policy: Policy, session: Session, path: Path, *, alias_of_login: bool,
                         same_owner: bool) -> R.Reply | None:
    """None when the logged-in user may send as `path`: its own address, an alias that
    delivers to it (`alias_of_login`), or, with smtp.sender_owner_domains, an address of a
    domain with the same owner as the login's domain (`same_owner`)."""
    if not sender_check_needed(policy, session, path):
        return None
    if path.canonical.lower() == session.auth_user.lower() or alias_of_login:
        return None
    if policy.sender_owner_domains and same_owner:
        return None
    return R.SENDER_NOT_OWNED.format(address=path, user=session.auth_user)


# ---- the message --------------------------------------------------------------------------------


def size_exceeded(policy: Policy, size: int) -> bool:
    return bool(policy.size_limit) and size > policy.size_limit


def hop_count_exceeded(received: int) -> bool:
    """`received` counts the message's Received headers without ours; ours makes one more."""
    return received + 1 >= MAX_RECEIVED_HEADERS


def message_refusal(policy: Policy, size: int, longest_line: int,
                    received: int = 0) -> R.Reply | None:
    """At end of data: over the size limit (552), a text line over 1000 octets, or so many
    Received headers that the message is looping (554 5.4.6).

    Over-long lines are refused, not folded: folding changes the message (and breaks DKIM
    signatures and base64), refusing tells the sender at once (RFC 5321 4.5.3.1.6)."""
    if size_exceeded(policy, size):
        return R.MESSAGE_TOO_BIG.format(limit=policy.size_limit)
    if longest_line > MAX_TEXT_LINE:
        return R.LONG_TEXT_LINE.format(limit=MAX_TEXT_LINE)
    if hop_count_exceeded(received):
        return R.TOO_MANY_HOPS.format(count=received + 1, limit=MAX_RECEIVED_HEADERS)
    return None


# ---- failed AUTH ---------------------------------------------------------------------------------

# After a failed AUTH the 535 waits AUTH_FAILURE_DELAY seconds, doubling with each further
# failure from the same address up to AUTH_FAILURE_DELAY_MAX (Postfix sleeps 1 s per error,
# Dovecot's auth penalty doubles up to 15 s). Failures are forgotten after AUTH_FAILURE_MEMORY.
AUTH_FAILURE_DELAY = 1.0
AUTH_FAILURE_DELAY_MAX = 16.0
AUTH_FAILURE_MEMORY = 15 * 60
# Addresses remembered at most; the oldest are forgotten first (bounded memory under attack).
AUTH_FAILURE_MAX_ADDRESSES = 10_000


class AuthThrottle:
    """Failed AUTH attempts per client address, and how long the next 535 must wait."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _current(self, ip: str) -> int:
        entry = self._failures.get(ip)
        if entry is None:
            return 0
        count, last = entry
        if self._clock() - last > AUTH_FAILURE_MEMORY:
            del self._failures[ip]
            return 0
        return count

    def failures(self, ip: str) -> int:
        return self._current(ip)

    def record_failure(self, ip: str) -> float:
        """Count a failure; returns the seconds to wait before answering it."""
        count = self._current(ip) + 1
        self._failures[ip] = (count, self._clock())
        self._failures.move_to_end(ip)
        while len(self._failures) > AUTH_FAILURE_MAX_ADDRESSES:
            self._failures.popitem(last=False)
        return float(min(AUTH_FAILURE_DELAY * 2 ** (count - 1), AUTH_FAILURE_DELAY_MAX))

    def record_success(self, ip: str) -> None:
        self._failures.pop(ip, None)


# ---- replies the driver sends without a decision of its own ------------------------------------
# (added with the driver split: the driver modules build no reply; each one comes from here)


def simple_reply(verb: str) -> R.Reply:
    """The reply to RSET, NOOP, HELP and VRFY: the same for everyone. VRFY never says whether
    a mailbox exists (RFC 5321 3.5.3 allows 252; answering it would hand out the user list)."""
    return _SIMPLE_REPLIES[verb]


_SIMPLE_REPLIES: dict[str, R.Reply] = {
    "RSET": R.RESET_OK, "NOOP": R.OK, "HELP": R.HELP, "VRFY": R.CANNOT_VRFY,
}


def quit_reply(policy: Policy) -> R.Reply:
    return _filled(R.CLOSING, "hostname", policy.hostname)


def timeout_reply(policy: Policy) -> R.Reply:
    return R.TIMEOUT.format(hostname=policy.hostname)


def shutdown_reply(policy: Policy) -> R.Reply:
    return R.SHUTTING_DOWN.format(hostname=policy.hostname)


def too_many_errors_reply(policy: Policy) -> R.Reply:
    return R.TOO_MANY_ERRORS.format(hostname=policy.hostname)


def local_error_reply() -> R.Reply:
    """A bug of ours ended the session: the client tries again later."""
    return R.LOCAL_ERROR


def lookup_error_reply(what: str) -> R.Reply:
    """The store could not answer: 4xx, mail waits (never refused for our own trouble)."""
    return R.LOOKUP_ERROR.format(what=what)


def rbl_reply(ip: str, zone: str) -> R.Reply:
    return R.RBL_LISTED.format(ip=ip, zone=zone)


def starttls_decision(policy: Policy, session: Session, have_context: bool) -> R.Reply:
    """The reply to STARTTLS: 220 only when it is offered and a certificate is loaded."""
    reply = starttls_reply(policy, session)
    if reply.code == 220 and not have_context:
        return R.TLS_NOT_AVAILABLE
    return reply


def tls_failed_reply() -> R.Reply:
    return R.TLS_NOT_AVAILABLE


def auth_username(raw: str) -> str:
    """The user name as the store knows it: surrounding space dropped, lower case (mailbox
    addresses are stored in lower case)."""
    return raw.strip().lower()


def auth_challenge_reply(challenge: str) -> R.Reply:
    return R.AUTH_CHALLENGE.format(challenge=challenge)


def auth_cancelled_reply() -> R.Reply:
    return R.AUTH_CANCELLED


def auth_malformed_reply(detail: str) -> R.Reply:
    return R.AUTH_MALFORMED.format(detail=detail)


def auth_result_reply(ok: bool) -> R.Reply:
    return R.AUTH_OK if ok else R.AUTH_FAILED


def auth_temporary_reply() -> R.Reply:
    return R.AUTH_TEMPORARY


def unique_recipients(paths: list[Path]) -> list[str]:
    """Each recipient once, in the order given (RCPT twice for one address delivers once);
    addresses compare without regard to case."""
    seen: set[str] = set()
    out = []
    for path in paths:
        address = _plain(path)
        key = address.lower()
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


def start_data_reply() -> R.Reply:
    return R.START_DATA


def queued_reply(qid: str) -> R.Reply:
    return R.QUEUED.format(qid=qid)


def queue_failure_reply(cause: BaseException | None) -> R.Reply:
    """A queue write failed: 452 when the disk (or quota) is full, else 451; both temporary."""
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return R.QUEUE_FULL
    return R.QUEUE_ERROR


def filter_error_reply() -> R.Reply:
    """A filter failure delays mail, never loses or passes it."""
    return R.FILTER_ERROR


def srs_candidate(policy: Policy, path: Path) -> bool:
    """An address of the SRS form at our own host name, which the store cannot know: a
    bounce of mail an alias forwarded (mailauth.srs); its hash decides whether it is ours."""
    return path.domain.lower() == policy.hostname.lower() and srs.is_srs(path.local)


def quota_refusal(address: str, quota_mb: int, used_bytes: int) -> R.Reply | None:
    """A mailbox at or over its quota is refused at RCPT (552 5.2.2, as Dovecot's
    quota-status service answers Postfix), so nothing is accepted only to be bounced."""
    if quota.over(quota_mb, used_bytes, 1):
        return R.MAILBOX_FULL.format(address=address)
    return None


# ---- connections per client (issue 16, item 8) ---------------------------------------------------


def client_connection_cap(policy: Policy) -> int:
    """Sessions one client address may hold at once: half the service's cap (at least one),
    so that one host cannot take every slot (Postfix's smtpd_client_connection_count_limit
    is half its process limit by default as well)."""
    return max(1, policy.max_connections // 2)


def client_connection_refused(policy: Policy, session: Session,
                              client_active: int) -> R.Reply | None:
    """`client_active` counts this connection too (0: the shared table could not track the
    address, so only the service's cap applies). The relay networks are exempt, as Postfix
    exempts $mynetworks."""
    if client_active <= client_connection_cap(policy):
        return None
    if in_networks(session.client_ip, policy.relay_networks):
        return None
    return R.TOO_MANY_FROM_CLIENT.format(hostname=policy.hostname)


# ---- how long a session and a message may take (issue 16, item 8) -------------------------------

# The first seconds of DATA are not judged by the data rate: a client may pause after the 354
# (Postfix likewise applies smtpd_min_data_rate through growing deadlines, not from byte one).
DATA_RATE_GRACE = 30.0


def read_timeout(policy: Policy, session_age: float) -> float:
    """How long the next read may wait: the idle timeout, but never past the session's
    lifetime (0 or less: the lifetime is over)."""
    return min(float(policy.timeout), policy.session_lifetime - session_age)


def session_too_long_reply(policy: Policy) -> R.Reply:
    return R.SESSION_TOO_LONG.format(hostname=policy.hostname)


def data_too_slow(policy: Policy, data_age: float, data_bytes: int) -> R.Reply | None:
    """A refusal when a message arrives slower than smtp.min_data_rate on average, once
    DATA_RATE_GRACE seconds have passed; None otherwise."""
    if policy.min_data_rate <= 0 or data_age <= DATA_RATE_GRACE:
        return None
    if data_bytes >= policy.min_data_rate * data_age:
        return None
    return R.DATA_TOO_SLOW.format(hostname=policy.hostname, rate=policy.min_data_rate)


# ---- outbound rate limits (issue 19, item 3) -----------------------------------------------------


def rate_limited_client(policy: Policy, session: Session) -> str:
    """Who the session's outgoing mail is counted for: "mailbox" (logged in), "ip" (a relay
    network's client that has not logged in) or "" (port 25 inbound: never counted)."""
    if session.auth_user:
        return "mailbox"
    if in_networks(session.client_ip, policy.relay_networks):
        return "ip"
    return ""


def rate_limit_reply(verdict: RL.Verdict) -> R.Reply:
    """451 4.7.1 naming the key and the limit it passed."""
    table = {RL.MESSAGES: R.RATE_LIMIT_MESSAGES, RL.RECIPIENTS: R.RATE_LIMIT_RECIPIENTS,
             RL.DOMAIN: R.RATE_LIMIT_DOMAIN}
    return table[verdict.rule].format(key=verdict.key, limit=verdict.limit)
