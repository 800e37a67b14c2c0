"""Outbound rate limits: counts in, verdict out (no file, no socket, no clock of its own).

Who is counted (a `Sender`), and under which key:

- a logged-in client (submission, AUTH on port 25, a webmail sending by SMTP): its mailbox,
  `mailbox:joe@example.org`, with the mailbox's own override of `limits.messages_per_hour`;
- `sendmail`: the calling unix user, `uid:33`;
- a client of the relay networks that has not logged in: its address, `ip:192.0.2.7`.

Besides its own key a message counts for its sending domain, `domain:example.org` (the
login's domain; for sendmail and the relay networks the sender's domain when it is one of
ours). Only mail that leaves the node counts: recipients in the node's own domains are not
counted, and a message none of whose recipients is remote is not counted at all. The limits
are there to stop the node being used to flood others, not to slow its own users' mail to
each other (nor the relay networks' hand-off of inbound mail, monitoring and the like).

Counts are kept per hour as a sliding window of `BUCKETS` buckets of `BUCKET_SECONDS` each
(`ratetable` stores them): a count falls by what a bucket held when that bucket turns an hour
old, so a sender over its limit is let through again once enough of its last hour has aged,
not at a fixed hour mark. 0 for any limit means no limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The window every limit is counted over: an hour, as cPanel's and Plesk's limits are.
WINDOW_SECONDS = 3600
# Twelve buckets of five minutes: a sender's count falls in steps of at most five minutes,
# and a key costs at most twelve pairs of numbers in the table.
BUCKET_SECONDS = 300
BUCKETS = WINDOW_SECONDS // BUCKET_SECONDS

MESSAGES = "messages"  # messages of the sender's own key per hour
RECIPIENTS = "recipients"  # remote recipients of the sender's own key per hour
DOMAIN = "domain"  # messages of the sending domain per hour

# A bucket: (its start, in seconds since the epoch, a multiple of BUCKET_SECONDS; messages;
# recipients).
Bucket = tuple[int, int, int]


@dataclass(frozen=True)
class Limits:
    """The node-wide limits (registry section `limits.`); 0 means no limit."""

    messages_per_hour: int
    recipients_per_hour: int
    domain_messages_per_hour: int
    hold_when_over: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Limits:
        return cls(int(settings["limits.messages_per_hour"]),
                   int(settings["limits.recipients_per_hour"]),
                   int(settings["limits.domain_messages_per_hour"]),
                   bool(settings["limits.hold_when_over"]))

    @property
    def any(self) -> bool:
        return bool(self.messages_per_hour or self.recipients_per_hour
                    or self.domain_messages_per_hour)


@dataclass(frozen=True)
class Sender:
    """Who a message is counted for: its own key, its sending domain (or ""), and for a
    mailbox its own messages-per-hour limit (None: the node's)."""

    key: str
    domain: str = ""
    messages_override: int | None = None

    @property
    def domain_key(self) -> str:
        return f"domain:{self.domain}" if self.domain else ""


def mailbox_sender(address: str, override: int | None = None) -> Sender:
    address = address.strip().lower()
    return Sender(f"mailbox:{address}", address.rpartition("@")[2], override)


def uid_sender(uid: int, domain: str = "") -> Sender:
    return Sender(f"uid:{uid}", domain.lower())


def ip_sender(ip: str, domain: str = "") -> Sender:
    return Sender(f"ip:{ip}", domain.lower())


@dataclass(frozen=True)
class Verdict:
    """A limit that a message would pass: which rule, for which key, the limit, the count
    in the last hour (before this message) and when enough of it has aged to send again."""

    rule: str  # MESSAGES, RECIPIENTS or DOMAIN
    key: str
    limit: int
    count: int
    resets_at: float  # seconds since the epoch

    def describe(self) -> str:
        """One line for people (sendmail's stderr, the panel), naming the key and the limit."""
        what = {MESSAGES: "messages", RECIPIENTS: "recipients", DOMAIN: "messages"}[self.rule]
        return (f"{self.key} is over its limit of {self.limit} {what} per hour "
                f"({self.count} in the last hour)")


def bucket_start(now: float) -> int:
    return int(now // BUCKET_SECONDS) * BUCKET_SECONDS


def live(buckets: Iterable[Bucket], now: float) -> list[Bucket]:
    """The buckets still inside the hour that ends at `now`, oldest first."""
    oldest = bucket_start(now) - (BUCKETS - 1) * BUCKET_SECONDS
    return sorted(b for b in buckets if oldest <= b[0] <= now)


def totals(buckets: Iterable[Bucket], now: float) -> tuple[int, int]:
    """(messages, recipients) in the last hour."""
    kept = live(buckets, now)
    return sum(b[1] for b in kept), sum(b[2] for b in kept)


def added(buckets: Iterable[Bucket], now: float, messages: int, recipients: int) -> list[Bucket]:
    """The buckets with a message of `recipients` counted now (old buckets dropped)."""
    kept = live(buckets, now)
    start = bucket_start(now)
    if kept and kept[-1][0] == start:
        last = kept.pop()
        kept.append((start, last[1] + messages, last[2] + recipients))
    else:
        kept.append((start, messages, recipients))
    return kept


def resets_at(buckets: Iterable[Bucket], now: float, limit: int, field: int,
              adding: int) -> float:
    """When enough buckets have aged out of the hour for `adding` more to fit under `limit`
    (`field` 1: messages, 2: recipients)."""
    kept = live(buckets, now)
    total = sum(b[field] for b in kept)
    if total + adding <= limit:
        return float(now)
    for bucket in kept:
        total -= bucket[field]
        if total + adding <= limit:
            return float(bucket[0] + WINDOW_SECONDS)
    # more than the limit in one go: it never fits; say when the hour is clear
    return float(kept[-1][0] + WINDOW_SECONDS) if kept else float(now)


def message_limit(limits: Limits, sender: Sender) -> int:
    """The messages-per-hour limit of the sender's own key: its mailbox's override if set."""
    if sender.messages_override is not None:
        return sender.messages_override
    return limits.messages_per_hour


def verdict(limits: Limits, sender: Sender, own: Iterable[Bucket], domain: Iterable[Bucket],
            now: float, *, messages: int = 1, recipients: int = 0) -> Verdict | None:
    """Whether `messages` more messages with `recipients` remote recipients in all may be
    counted for `sender` now, given the buckets of its own key and of its domain; None
    when they fit under every limit, else the first limit they pass (messages, recipients,
    domain, in that order). `messages=0` asks about recipients only (at RCPT)."""
    own, domain = list(own), list(domain)
    sent, rcpts = totals(own, now)
    limit = message_limit(limits, sender)
    if limit and messages and sent + messages > limit:
        return Verdict(MESSAGES, sender.key, limit, sent,
                       resets_at(own, now, limit, 1, messages))
    limit = limits.recipients_per_hour
    if limit and recipients and rcpts + recipients > limit:
        return Verdict(RECIPIENTS, sender.key, limit, rcpts,
                       resets_at(own, now, limit, 2, recipients))
    limit = limits.domain_messages_per_hour
    if limit and messages and sender.domain:
        count = totals(domain, now)[0]
        if count + messages > limit:
            return Verdict(DOMAIN, sender.domain_key, limit, count,
                           resets_at(domain, now, limit, 1, messages))
    return None


def over_now(limits: Limits, sender: Sender, own: Iterable[Bucket], domain: Iterable[Bucket],
             now: float, recipients_so_far: int = 0) -> Verdict | None:
    """The early check (at the first remote RCPT, and again for each further one): would
    one more message, with one more remote recipient than this transaction has so far,
    pass a limit?"""
    return verdict(limits, sender, own, domain, now, messages=1,
                   recipients=recipients_so_far + 1)


def counted(remote_recipients: int) -> bool:
    """A message is counted when at least one of its recipients is remote."""
    return remote_recipients > 0
