"""The X-filters: pass on the log lines of the messages (or deliveries) that match.

A filter keeps messages whole.  It decides on a message when it learns its sender (`info msg`)
or, for recipient filters, on each delivery when it starts; until then it holds the message's
`new msg`/`info msg` lines (a few per in-flight message), and writes them out in front of the
first delivery that passes, so the next tool always sees a message's header before its
deliveries.  Lines that belong to no message (status, warnings) are not passed on, except
`status: exiting`, which the next tool needs to see qmail-send's restart.  A bounce message
passes with the message it bounces (`bounce msg N qp P` ties them), and so do the
administrator's actions on a message (`hold msg N: ...`, `release msg N`, `retry msg N` ...).
Lines are passed on as they came, stamp and all (a CR before the line end is dropped), so
filters chain and feed any operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

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
    TripleBounce,
    domain_of,
    mailbox_address,
    parse,
)
from mailyard.logtools.tai64n import Clock, Stamped
from mailyard.logtools.tracking import DROP, NEW, PASS, UNDECIDED, Delivery, Message, Tracker
from mailyard.logtools.webmail import SmtpWebmail

# A verdict on a whole message: True passes it all, False drops it, None decides per delivery.
MessageRule = Callable[[Message], bool | None]
DeliveryRule = Callable[[Message, Delivery], bool]


class AddressMatcher:
    """Matches addresses given on the command line: `user@domain` exactly, `@domain` for a
    whole domain; case-insensitive (domains are, and in practice local parts too)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.addresses = {p.lower() for p in patterns if not p.startswith("@")}
        self.domains = {p[1:].lower() for p in patterns if p.startswith("@")}

    def __call__(self, address: str | None) -> bool:
        if address is None:
            return False
        a = address.lower()
        return a in self.addresses or (bool(self.domains) and domain_of(a) in self.domains)


def run_filter(lines: Iterable[Stamped], out: TextIO, tracker: Tracker,
               message_rule: MessageRule, delivery_rule: DeliveryRule | None = None) -> None:
    """Write the lines of `lines` that belong to passing messages and deliveries."""
    write = out.write
    diag = tracker.diag
    clock = Clock()

    def passed(m: Message | None) -> bool:
        return m is not None and (m.mark == PASS or m.flushed)

    def decide(m: Message) -> None:
        verdict = True if passed(m.bounce_of) else message_rule(m)
        m.mark = PASS if verdict else (DROP if verdict is False else UNDECIDED)
        if m.mark == PASS and m.held:
            for held in m.held:
                write(held)
            m.flushed = True
        if m.mark != UNDECIDED:
            m.held = None

    for s in lines:
        text = s.text
        ev = parse(text)
        line = f"@{s.stamp} {text}\n" if s.kind == "tai64n" else f"{s.stamp} {text}\n"
        if isinstance(ev, NewMsg):
            m = tracker.new_msg(ev.msg)
            m.held = [line]
        elif isinstance(ev, InfoMsg):
            m = tracker.info(ev)
            try:
                m.info_time = clock.unix(s)
            except ValueError:
                m.info_time = 0.0
            if m.held is None:
                m.held = []
            m.held.append(line)
            decide(m)
        elif isinstance(ev, StartDelivery):
            d = tracker.start(ev)
            m = d.message
            if m.mark == NEW:
                decide(m)
            if m.mark == PASS:
                d.passes = True
            elif m.mark == UNDECIDED and delivery_rule is not None and delivery_rule(m, d):
                d.passes = True
                if m.held:
                    for held in m.held:
                        write(held)
                m.held = None
                m.flushed = True
            if d.passes:
                write(line)
        elif isinstance(ev, DeliveryResult):
            finished = tracker.result(ev.delivery)
            if finished is not None and finished.passes:
                write(line)
        elif isinstance(ev, EndMsg):
            if passed(tracker.end(ev.msg)):
                write(line)
        elif isinstance(ev, BounceMsg):
            if passed(tracker.bounce(ev.msg, ev.qp)):
                write(line)
        elif isinstance(ev, TripleBounce):
            if passed(tracker.get(ev.msg)):
                write(line)
        elif isinstance(ev, QueueAction):
            # the administrator's hold, release, retry ...: part of the message's history
            if passed(tracker.get(ev.msg)):
                write(line)
            elif m is not None and m.held is not None:
                m.held.append(line)
        elif isinstance(ev, Malformed):
            diag.problem("malformed", "")
        elif text == EXITING:
            tracker.restart()
            write(line)


# ---- the four filters ------------------------------------------------------------------------

def xrcpt(patterns: Sequence[str]) -> tuple[MessageRule, DeliveryRule]:
    """Deliveries to the given recipients, with their messages' header lines."""
    match = AddressMatcher(patterns)
    return (lambda m: None), (lambda m, d: match(mailbox_address(d.recipient)))


def xsend(patterns: Sequence[str]) -> tuple[MessageRule, DeliveryRule | None]:
    """Whole messages from the given senders (`<>` for bounces)."""
    match = AddressMatcher(patterns)
    want_null = "<>" in patterns

    def rule(m: Message) -> bool:
        if m.sender is None:
            return False
        return (want_null and m.sender == "") or match(m.sender)

    return rule, None


def xuser(domains: Sequence[str]) -> tuple[MessageRule, DeliveryRule]:
    """Messages sent from the user's domains (whole), and deliveries to the user's domains."""
    owned = {d.lower().lstrip("@") for d in domains}

    def message_rule(m: Message) -> bool | None:
        if m.sender is not None and domain_of(m.sender) in owned:
            return True
        return None

    def delivery_rule(m: Message, d: Delivery) -> bool:
        return domain_of(mailbox_address(d.recipient)) in owned

    return message_rule, delivery_rule


def xwebmail(uids: set[int], smtp: SmtpWebmail | None = None
             ) -> tuple[MessageRule, DeliveryRule | None]:
    """Whole messages of the webmail: injected through sendmail by one of `uids` (the `uid`
    of `info msg`), or accepted by SMTP from the webmail's addresses (see webmail.py)."""

    def rule(m: Message) -> bool:
        if m.uid in uids:
            return True
        return smtp is not None and m.sender is not None and smtp.accepted(m.msg, m.info_time)

    return rule, None
