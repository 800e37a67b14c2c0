"""What `xwebmail` takes for the webmail's mail, by the two ways a webmail sends on a node.

* Through the node's `sendmail`, as the web server's user (PHP's mail(); a webmail set to use
  sendmail).  sendmail records the caller's uid, and qmail-send's `info msg` line shows it:
  the message is the webmail's when that uid is the webmail user's (`logtools.webmail_user`,
  `www-data` by default, the web server's user on Debian).
* By SMTP or submission, from an address of `logtools.webmail_clients` (Roundcube's default
  is SMTP to localhost).  Those services log `accepted qid=N ... ip=IP` when they queue a
  message, and N is the message number of the send log's `new msg N`.  Their logs are read
  alongside the send log, in time order, so that a message number reused by a later
  message is not taken for the webmail's: an accepted line of N from another client cancels
  an earlier one from the webmail.  Only the webmail's messages not yet seen in the send log
  are kept in memory.
"""

from __future__ import annotations

import heapq
import ipaddress
import pwd
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mailyard.logtools.selectors import first_line_where
from mailyard.logtools.sources import SourceError, log_files
from mailyard.logtools.tai64n import Clock, split_stamp

# The services a webmail may hand mail to by SMTP (their logs are HOME/log/<service>/).
SMTP_SERVICES = ("smtp", "submission")

# How long before the first send-log line a message may have been accepted and still be
# picked up by the send service inside the input: the send service takes new mail within a
# second, but waits while it is stopped; a day covers a send service down overnight.
ACCEPT_LOOKBACK_SECONDS = 86_400

_ACCEPTED_RE = re.compile(r"accepted qid=([0-9]+) .*? ip=([0-9A-Fa-f:.]+)(?: |$)")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebmailError(ValueError):
    """The webmail user cannot be found on this system; the text says what to set."""


def uid_of(user: str) -> int:
    """The uid of a user name, or of a number given as text."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise WebmailError(f"there is no system user {user!r} here") from None


def networks_of(items: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _accepted(logdir: Path, since: float) -> Iterator[tuple[float, int, str]]:
    """(time, qid, client ip) of each message a service queued, from `since` on, in order."""
    clock = Clock()
    try:
        files = log_files(logdir)
    except SourceError:
        return  # the service has never run on this node
    for lf in files:
        if lf.rotated_at is not None and lf.rotated_at < since:
            continue
        try:
            f = open(lf.path, "rb")  # noqa: SIM115
        except OSError:
            continue
        with f:
            size = f.seek(0, 2)
            f.seek(first_line_where(f, 0, size, lambda t: t >= since, clock))
            for raw in f:
                if b" accepted qid=" not in raw or not raw.endswith(b"\n"):
                    continue
                s = split_stamp(raw.decode("utf-8", "surrogateescape"))
                if s is None:
                    continue
                m = _ACCEPTED_RE.search(s.text)
                if m is None:
                    continue
                try:
                    yield clock.unix(s), int(m[1]), m[2]
                except ValueError:
                    continue


class SmtpWebmail:
    """Which messages the SMTP services accepted from the webmail's addresses."""

    def __init__(self, home: Path, networks: tuple[Network, ...]) -> None:
        self.home = home
        self.networks = networks
        self._events: Iterator[tuple[float, int, str]] | None = None
        self._next: tuple[float, int, str] | None = None
        self._pending: dict[int, bool] = {}  # qid -> accepted from the webmail, not yet seen

    def _from_webmail(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def _advance(self, t: float) -> None:
        if self._events is None:
            since = t - ACCEPT_LOOKBACK_SECONDS
            self._events = iter(heapq.merge(*(_accepted(self.home / "log" / service, since)
                                              for service in SMTP_SERVICES)))
            self._next = next(self._events, None)
        events = self._events
        pending = self._pending
        while self._next is not None and self._next[0] <= t:
            _, qid, ip = self._next
            if self._from_webmail(ip):
                pending[qid] = True
            else:
                pending.pop(qid, None)  # the number now belongs to another client's message
            self._next = next(events, None)

    def accepted(self, msg: int, t: float) -> bool:
        """True if message `msg`, whose `info msg` line is stamped `t`, came from the webmail."""
        if not self.networks:
            return False
        self._advance(t)
        return self._pending.pop(msg, False)
