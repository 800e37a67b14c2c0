"""In-flight state while reading the send log: messages between `new msg` and `end msg`,
deliveries between `starting delivery` and their result, and the count of bad input.

Memory stays constant in the size of the log: a message leaves the state at its `end msg`,
a delivery at its result, and both tables have a cap (below) for logs where those lines
never come (a cut log, a crashed qmail-send).

A restart of qmail-send starts its delivery numbers again at 1, but the queue, and so every
message, survives it.  A restart is seen at `status: exiting` (a clean stop) or, after a
crash that wrote nothing, at a `starting delivery` whose number is not above the last one
(qmail-send numbers deliveries upwards from 1 in each run).  Either way only the table of
running deliveries is emptied; the messages stay.
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

# Bounces announced (`bounce msg N qp P`) whose new message (`info msg M: ... qp P`) has not
# been read yet.  qmail-send writes the two lines within one pass of its loop, so only a
# handful are ever waiting; the cap only guards against a log cut between them.
MAX_PENDING_BOUNCES = 10_000

# The row that counts delivery results whose start is not in the input: qmail's `delivery D:`
# line names neither message nor recipient.  Parentheses cannot occur in a domain or in an
# address as qmail-send logs it, so the row cannot collide with a real one.
UNKNOWN_ROW = "(unknown)"

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
    qp: int = 0
    bounce_of: Message | None = None  # the message whose bounce this one is
    info_time: float = 0.0  # unix time of its `info msg` line (filters set it)


@dataclass(slots=True, eq=False)
class Delivery:
    """One delivery attempt between its start and its result."""

    delivery: int
    message: Message
    channel: str
    recipient: str
    passes: bool = False  # a filter lets this delivery's lines through
    row: list[int] | None = None  # the Top row its start was counted in


@dataclass
class Diagnostics:
    """Bad input seen by one tool, reported as ONE warning line at the end."""

    unreadable: int = 0  # no stamp, or stamp unreadable
    truncated: int = 0  # last line of a file without its line end
    malformed: int = 0  # a known qmail-send line that does not fit its format
    orphan_results: int = 0  # a delivery result whose start is not in the input
    orphans_counted: bool = False  # True: counted in the UNKNOWN_ROW (Top), else skipped
    early_messages: int = 0  # messages whose start is not in the input (sender unknown)
    forgotten: int = 0  # state dropped at the caps above
    first_problem: str = ""
    extras: list[str] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)  # QueueAction lines, by action

    def action(self, name: str) -> None:
        """Count one of the administrator's actions on a queued message (not a problem)."""
        self.actions[name] = self.actions.get(name, 0) + 1

    def notes(self) -> str:
        """The administrator's actions in the input, e.g. `2 hold, 1 release`; "" if none."""
        return ", ".join(f"{n} {name}" for name, n in sorted(self.actions.items()))

    def note(self, tool: str, stream: TextIO | None = None) -> None:
        text = self.notes()
        if text:
            print(f"{tool}: note: the administrator's actions on queued messages: {text}",
                  file=stream or sys.stderr)

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
            n = self.orphan_results
            if self.orphans_counted:
                parts.append(f"{n} delivery result{'s' * (n != 1)} whose start is not in the "
                             f"input, counted in the {UNKNOWN_ROW} row")
            else:
                parts.append(f"skipped {n} delivery result{'s' * (n != 1)} whose start is not "
                             f"in the input")
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
        self.last_delivery = 0  # the highest delivery number started since the last restart
        self.restarts = 0
        self.bounces: dict[int, Message] = {}  # qp of a bounce's new message -> its origin

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
        m.sender, m.bytes, m.uid, m.qp = ev.sender, ev.bytes, ev.uid, ev.qp
        if self.bounces:
            origin = self.bounces.pop(ev.qp, None)
            if origin is not None and origin is not m:
                m.bounce_of = origin
        return m

    def bounce(self, msg: int, qp: int) -> Message | None:
        """`bounce msg N qp P`: the bounce that P injects will be tied to message N."""
        m = self.messages.get(msg)
        if m is not None:
            self.bounces[qp] = m
            if len(self.bounces) > MAX_PENDING_BOUNCES:
                del self.bounces[next(iter(self.bounces))]
        return m

    def restart(self) -> None:
        """qmail-send stopped or crashed: its delivery numbers start again at 1."""
        self.deliveries.clear()
        self.last_delivery = 0
        self.restarts += 1

    def start(self, ev: StartDelivery) -> Delivery:
        if ev.delivery <= self.last_delivery:
            self.restart()  # a crash without `status: exiting`
        self.last_delivery = ev.delivery
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
