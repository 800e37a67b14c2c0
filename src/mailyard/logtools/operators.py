"""The operators: Show (one line per delivery attempt) and Top (counts per address or domain).

Both follow each delivery from its `starting delivery` line to its result, and each message
from `new msg` to `end msg`, through a `Tracker`; an attempt is shown when its result line
comes, at that line's time.  Top counts a delivery in its row when it starts (messages,
bytes, deliveries) and its result when that comes, so a delivery whose result is after the
input still counts; a result whose start is before the input goes to the UNKNOWN_ROW.

This module is the line-by-line reference; `blocks.py` computes the same Top counts from
blocks of bytes, and the tests check that the two agree.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, TextIO

from mailyard.logtools.parser import (
    EXITING,
    BounceMsg,
    DeliveryResult,
    EndMsg,
    InfoMsg,
    Malformed,
    NewMsg,
    QueueAction,
    StartDelivery,
    decode_report,
    domain_of,
    mailbox_address,
    parse,
    remote_host,
)
from mailyard.logtools.tai64n import Clock, Stamped
from mailyard.logtools.tracking import UNKNOWN_ROW, Delivery, Message, Tracker


class Attempt(NamedTuple):
    """One finished delivery attempt."""

    stamp: Stamped  # of the result line
    result: str  # success, deferral, failure, mangled
    channel: str  # local or remote
    recipient: str  # as logged
    report: str  # as logged (encoded)
    message: Message
    delivery: Delivery | None  # None for an administrator's action (result: ACTIONS)


# The administrator's actions on a queued message (parser.QueueAction), shown by show-all.
ACTIONS = ("hold", "release", "retry", "delete", "bounce", "purge-local", "purge-remote")


def attempts(lines: Iterable[Stamped], tracker: Tracker,
             on_start: Callable[[Delivery], None] | None = None,
             on_orphan: Callable[[str], None] | None = None,
             actions: bool = False) -> Iterator[Attempt]:
    """The delivery attempts of a log, in the order their results were logged.

    `on_start` is called with each delivery when it starts; `on_orphan` with the result of
    each result line whose start is not in the input (counted in the diagnostics too).
    The administrator's actions are counted in the diagnostics, and also yielded (result:
    the action, delivery None, report: the reason of a hold) when `actions` is true.
    """
    diag = tracker.diag
    for s in lines:
        text = s.text
        c = text[:1]
        # Cheap first-letter test: a third of a qmail-send log is `status:` lines.
        if c not in "dsniebhrw":
            continue
        if c == "s" and text.startswith("status:"):
            if text == EXITING:
                tracker.restart()
            continue
        ev = parse(text)
        if isinstance(ev, DeliveryResult):
            d = tracker.result(ev.delivery)
            if d is not None:
                yield Attempt(s, ev.result, d.channel, d.recipient, ev.report, d.message, d)
            elif on_orphan is not None:
                on_orphan(ev.result)
        elif isinstance(ev, StartDelivery):
            d = tracker.start(ev)
            if on_start is not None:
                on_start(d)
        elif isinstance(ev, NewMsg):
            tracker.new_msg(ev.msg)
        elif isinstance(ev, InfoMsg):
            tracker.info(ev)
        elif isinstance(ev, EndMsg):
            tracker.end(ev.msg)
        elif isinstance(ev, BounceMsg):
            tracker.bounce(ev.msg, ev.qp)
        elif isinstance(ev, QueueAction):
            diag.action(ev.action)
            if actions:
                m = tracker.get(ev.msg) or Message(ev.msg)
                yield Attempt(s, ev.action, "", "-", ev.reason, m, None)
        elif isinstance(ev, Malformed):
            diag.problem("malformed", "")


def sender_text(m: Message) -> str:
    """How a report shows a sender: `<>` for bounces, `?` when the info line is not in input."""
    if m.sender is None:
        return "?"
    return m.sender or "<>"


# ---- Show ---------------------------------------------------------------------------------------

SHOW_RESULTS = {
    "show-all": ("success", "deferral", "failure", "mangled", *ACTIONS),
    "show-success": ("success",),
    "show-failures": ("failure",),
    "show-deferrals": ("deferral", "mangled"),
}


def show_line(a: Attempt, clock: Clock, detail: bool) -> str:
    """`TIME RESULT [SENDER] RECIPIENT WHERE REPLY`; every field but REPLY is space-free.

    WHERE is `remote=HOST` (the server qmail-remote talked to, `-` if the report names none)
    or `local=ADDRESS` (the local address qmail-local delivered to, virtual-domain prefix and
    all).  RECIPIENT has that prefix removed.  An administrator's action is shown as
    `TIME ACTION [SENDER] - msg=N REASON` (REASON: a hold's, else empty).
    """
    sender = f" {sender_text(a.message)}" if detail else ""
    if a.delivery is None:
        reason = f" {a.report}" if a.report else ""
        return f"{clock.display(a.stamp)} {a.result:<8}{sender} - msg={a.message.msg}{reason}\n"
    if a.channel == "remote":
        where = "remote=" + (remote_host(a.report) or "-")
        recipient = a.recipient
    else:
        where = "local=" + a.recipient
        recipient = mailbox_address(a.recipient)
    reply = decode_report(a.report) if a.result != "mangled" else "report mangled, will defer"
    return f"{clock.display(a.stamp)} {a.result:<8}{sender} {recipient} {where} {reply}\n"


def write_attempts(found: Iterable[Attempt], out: TextIO, results: tuple[str, ...],
                   detail: bool, channel: str | None = None) -> int:
    """Write the show line of each attempt with one of `results`; how many were written."""
    clock = Clock()
    n = 0
    for a in found:
        if a.result in results and (channel is None or a.channel == channel):
            out.write(show_line(a, clock, detail))
            n += 1
    return n


def run_show(lines: Iterable[Stamped], out: TextIO, tracker: Tracker, results: tuple[str, ...],
             detail: bool, channel: str | None = None) -> int:
    """Show the attempts of `lines`, read line by line (the reference way)."""
    return write_attempts(attempts(lines, tracker, actions=True), out, results, detail, channel)


# ---- Top ----------------------------------------------------------------------------------------

FIELDS = ("messages", "deliveries", "successes", "deferrals", "failures", "bytes")
RESULT_COLUMN = {"success": 2, "deferral": 3, "mangled": 3, "failure": 4}


def user_of(d: Delivery) -> str:
    """The node's user in a delivery: the recipient of a local one, the sender of a remote one."""
    if d.channel == "local":
        return mailbox_address(d.recipient)
    return sender_text(d.message)


def key_address(d: Delivery, by: str) -> str:
    if by == "recipient":
        return mailbox_address(d.recipient) if d.channel == "local" else d.recipient
    if by == "sender":
        return sender_text(d.message)
    return user_of(d)


def key_domain(d: Delivery, by: str) -> str:
    address = key_address(d, by)
    if address in ("?", "<>"):
        return address
    return domain_of(address) or address


@dataclass(frozen=True)
class TopSpec:
    """What a top-* operator counts by default."""

    key: str  # the column title: recipient, sender, user or domain
    by: str  # whose address: recipient, sender, user
    sort: str  # default sort field
    only: str | None = None  # keep only rows where this field is non-zero


TOPS = {
    "top-recipients": TopSpec("recipient", "recipient", "messages"),
    "top-senders": TopSpec("sender", "sender", "messages"),
    "top-deferrals": TopSpec("user", "user", "deferrals", "deferrals"),
    "top-failures": TopSpec("user", "user", "failures", "failures"),
    "top-user-stats": TopSpec("user", "user", "deliveries"),
    "top-domain-stats": TopSpec("domain", "user", "deliveries"),
}


class TopCounter:
    """The rows of a Top report, filled as deliveries start and their results come.

    A message counts once per row (messages, bytes): the first time one of its deliveries
    starts in that row; every delivery started counts in deliveries, and its result when it
    comes.  Results whose start is not in the input are counted in UNKNOWN_ROW (deliveries
    and result); their channel is unknown, so only when no channel is asked for.
    """

    def __init__(self, tracker: Tracker, spec: TopSpec, by: str, channel: str | None) -> None:
        self.rows: dict[str, list[int]] = {}
        self.spec, self.by, self.channel = spec, by, channel
        self.per_domain = spec.key == "domain"
        tracker.diag.orphans_counted = channel is None

    def start(self, d: Delivery) -> None:
        if self.channel is not None and d.channel != self.channel:
            return
        key = key_domain(d, self.by) if self.per_domain else key_address(d, self.by)
        rows = self.rows
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0, 0, 0, 0, 0, 0]
        m = d.message
        if m.counted is None:
            m.counted = set()
        if key not in m.counted:
            m.counted.add(key)
            row[0] += 1
            row[5] += m.bytes
        row[1] += 1
        d.row = row

    def orphan(self, result: str) -> None:
        if self.channel is None:
            row = self.rows.get(UNKNOWN_ROW)
            if row is None:
                row = self.rows[UNKNOWN_ROW] = [0, 0, 0, 0, 0, 0]
            row[1] += 1
            row[RESULT_COLUMN[result]] += 1

    def feed(self, lines: Iterable[Stamped], tracker: Tracker) -> None:
        """Count the deliveries of `lines`, line by line (the reference way)."""
        for a in attempts(lines, tracker, self.start, self.orphan):
            row = a.delivery.row  # type: ignore[union-attr]  # no actions asked: never None
            if row is not None:
                row[RESULT_COLUMN[a.result]] += 1


def top_rows(lines: Iterable[Stamped], tracker: Tracker, spec: TopSpec, by: str,
             channel: str | None) -> dict[str, list[int]]:
    """Counts per row key, read line by line (see TopCounter)."""
    counter = TopCounter(tracker, spec, by, channel)
    counter.feed(lines, tracker)
    return counter.rows


def order_rows(rows: dict[str, list[int]], spec: TopSpec, sort: str,
               limit: int | None) -> list[tuple[str, list[int]]]:
    """Rows sorted by `sort` (largest first; the key column alphabetically), ties by key."""
    items = list(rows.items())
    if spec.only is not None:
        col = FIELDS.index(spec.only)
        items = [(k, r) for k, r in items if r[col]]
    if sort in FIELDS:
        col = FIELDS.index(sort)
        items.sort(key=lambda kr: (-kr[1][col], kr[0]))
    else:
        items.sort(key=lambda kr: kr[0])
    if limit is not None:
        items = items[:limit]
    return items


def render_table(items: list[tuple[str, list[int]]], key_title: str, out: TextIO) -> None:
    """Aligned columns: the key left-aligned, the numbers right-aligned."""
    headers = (key_title, *FIELDS)
    body = [(k, *(str(v) for v in r)) for k, r in items]
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]

    def fmt(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}".rstrip() + "\n"

    out.write(fmt(headers))
    for row in body:
        out.write(fmt(row))


def render_json(items: list[tuple[str, list[int]]], key_title: str, out: TextIO) -> None:
    data = [{key_title: k, **dict(zip(FIELDS, r, strict=True))} for k, r in items]
    json.dump(data, out, indent=1)
    out.write("\n")


def render_csv(items: list[tuple[str, list[int]]], key_title: str, out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow((key_title, *FIELDS))
    for k, r in items:
        w.writerow((k, *r))
