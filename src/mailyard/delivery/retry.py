"""When to try a deferred delivery again, and when a message has waited too long.

qmail-send's schedule, kept because administrators know it: the n-th look at a message is at
birth + (sqrt(age) + skip)^2 seconds, with skip 10 for local and 20 for remote deliveries, so
retries start minutes apart and grow to hours. A message past its queue lifetime gets one
last try at the moment the lifetime ends; a temporary failure then counts as permanent.
"""

from __future__ import annotations

import math

# qmail-send's chanskip: local mailboxes recover quickly, remote servers more slowly.
CHANNEL_SKIP: dict[str, int] = {"local": 10, "remote": 20}
LIFETIME_TEXT = "I'm not going to try again; this message has been in the queue too long."


def next_retry(birth: float, now: float, channel: str, lifetime: float) -> float:
    """The time of the next attempt after a deferral at `now`."""
    age = now - birth
    n = math.isqrt(int(age)) if age > 0 else 0
    n += CHANNEL_SKIP[channel]
    when = birth + n * n
    return min(max(when, now), birth + lifetime) if now < birth + lifetime else now


def expired(birth: float, attempt_started: float, lifetime: float) -> bool:
    """A deferral of an attempt started at or after the end of the lifetime is final."""
    return attempt_started >= birth + lifetime
