"""In-flight state while reading the send log: messages between `new msg` and `end msg`,
deliveries between `starting delivery` and their result, and the count of bad input.

Memory stays constant in the size of the log: a message leaves the state at its `end msg`,
a delivery at its result, and both tables have a cap (below) for logs where those lines
never come (a cut log, a crashed qmail-send).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from mailyard.logtools.parser import InfoMsg, StartDelivery

# Messages in the queue at one time.  A message stays in our state while qmail-send keeps it
# (up to queuelifetime, a week by default), so this is bounded by the size of the queue, not by
# the rate of mail.  qmail's own documentation treats a queue of tens of thousands as a
# disaster; 200 000 leaves room for that and costs about 60 MB at worst.  Past the cap the
# oldest message is forgotten and counted in the warning.
MAX_IN_FLIGHT_MESSAGES = 200_000

# Deliveries running at one time: at most concurrencylocal + concurrencyremote (qmail-send
# caps each by what its spawn programs allow, a few hundred).  A delivery whose result never
# comes (the log was cut, qmail-send restarted and reused the number) would otherwise stay
# forever; 20 000 is far above any real concurrency.
MAX_IN_FLIGHT_DELIVERIES = 20_000

# Message state: a filter decision, values of Message.mark.
NEW, UNDECIDED, PASS, DROP = 0, 1, 2, 3


@dataclass(slots=True, eq=False)
class Message:
    """What we know of one queued message."""

    msg: int
    sender: str | None = None  # None: its info line is not in the input
    bytes: int = 0
    uid: int | None = None
    started_before_input: bool = False  # first seen at a delivery, its start was cut off
    mark: int = NEW  # a filter's decision for the whole message
    held: list[str] | None = None  # a filter's lines waiting for its decision
    flushed: bool = False  # a filter has written this message's header lines
    counted: set[str] | None = None  # report rows this message was already counted in


@dataclass(slots=True, eq=False)
class Delivery:
    """One delivery attempt between its start and its result."""

    delivery: int
    message: Message
    channel: str
    recipient: str
    passes: bool = False  # a filter lets this delivery's lines through


@dataclass
class Diagnostics:
    """Bad input seen by one tool, reported as ONE warning line at the end."""

    unreadable: int = 0  # no stamp, or stamp unreadable
    truncated: int = 0  # last line of a file without its line end
    malformed: int = 0  # a known qmail-send line that does not fit its format
    orphan_results: int = 0  # a delivery result whose start is not in the input (skipped)
    early_messages: int = 0  # messages whose start is not in the input (sender unknown)
    forgotten: int = 0  # state dropped at the caps above
    first_problem: str = ""
    extras: list[str] = field(default_factory=list)

    def problem(self, kind: str, where: str) -> None:
        """Count one skipped line of `kind` (an attribute name) seen at `where`."""
        setattr(self, kind, getattr(self, kind) + 1)
        if not self.first_problem and where:
            self.first_problem = where

    def summary(self) -> str:
        parts = []
        skipped = self.unreadable + self.truncated + self.malformed
        if skipped:
            kinds = []
            if self.unreadable:
                kinds.append(f"{self.unreadable} without a readable stamp")
            if self.truncated:
                kinds.append(f"{self.truncated} truncated")
            if self.malformed:
                kinds.append(f"{self.malformed} malformed")
            where = f", first at {self.first_problem}" if self.first_problem else ""
            parts.append(f"skipped {skipped} bad line{'s' * (skipped != 1)} "
                         f"({', '.join(kinds)}{where})")
        if self.orphan_results:
            parts.append(f"skipped {self.orphan_results} delivery result"
                         f"{'s' * (self.orphan_results != 1)} whose start is not in the input")
        if self.early_messages:
            parts.append(f"{self.early_messages} message{'s' * (self.early_messages != 1)} "
                         f"started before the input (sender unknown, shown as ?)")
        if self.forgotten:
            parts.append(f"forgot {self.forgotten} in-flight entries past the memory cap")
        parts.extend(self.extras)
        return "; ".join(parts)

    def warn(self, tool: str, stream: TextIO | None = None) -> None:
        text = self.summary()
        if text:
            print(f"{tool}: warning: {text}", file=stream or sys.stderr)


class Tracker:
    """The in-flight messages and deliveries of a log being read in order."""

    def __init__(self, diag: Diagnostics,
                 max_messages: int = MAX_IN_FLIGHT_MESSAGES,
                 max_deliveries: int = MAX_IN_FLIGHT_DELIVERIES) -> None:
        self.diag = diag
        self.messages: dict[int, Message] = {}
        self.deliveries: dict[int, Delivery] = {}
        self.max_messages = max_messages
        self.max_deliveries = max_deliveries

    def _add_message(self, m: Message) -> Message:
        messages = self.messages
        messages.pop(m.msg, None)  # an inode number reused: the old message is gone
        messages[m.msg] = m
        if len(messages) > self.max_messages:
            del messages[next(iter(messages))]  # dicts keep insertion order: oldest first
            self.diag.forgotten += 1
        return m

    def new_msg(self, msg: int) -> Message:
        return self._add_message(Message(msg))

    def info(self, ev: InfoMsg) -> Message:
        m = self.messages.get(ev.msg)
        if m is None:  # the log starts between `new msg` and `info msg`
            m = self._add_message(Message(ev.msg))
        m.sender, m.bytes, m.uid = ev.sender, ev.bytes, ev.uid
        return m

    def start(self, ev: StartDelivery) -> Delivery:
        m = self.messages.get(ev.msg)
        if m is None:
            m = self._add_message(Message(ev.msg, started_before_input=True))
            self.diag.early_messages += 1
        d = Delivery(ev.delivery, m, ev.channel, ev.recipient)
        deliveries = self.deliveries
        deliveries.pop(ev.delivery, None)
        deliveries[ev.delivery] = d
        if len(deliveries) > self.max_deliveries:
            del deliveries[next(iter(deliveries))]
            self.diag.forgotten += 1
        return d

    def result(self, delivery: int, where: str = "") -> Delivery | None:
        d = self.deliveries.pop(delivery, None)
        if d is None:
            self.diag.problem("orphan_results", "")
        return d

    def get(self, msg: int) -> Message | None:
        return self.messages.get(msg)

    def end(self, msg: int) -> Message | None:
        return self.messages.pop(msg, None)
