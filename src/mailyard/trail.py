"""The delivery trail: what the node's logs say happened to the mail of an address, a
Message-ID or a queue id, from the SMTP acceptance to the Maildir file or the bounce.

Pure: log lines in (their time and text), trail records out; `trail_logs.py` reads the log
files and hands their lines here. One function per kind of line the trail reads:

* the SMTP services' log (HOME/log/smtp, HOME/log/submission): `accepted_line` (a message
  queued: `accepted qid=N size=... from=<...> to=<...>,<...> ip=... protocol=... [user=...]
  tls=... helo=... [msgid=<...>] [filters=...] session=...`) and `reject_line` (a refusal:
  `reject ip=... rule=NAME value=... reply=CODE STATUS [from=<...>] session=...`);
* the send log (HOME/log/send), in qmail-send's words, read by `logtools.parser.parse`:
  `new msg N`, `info msg N: ...`, `starting delivery D: msg N to ...`, `delivery D: ...`,
  `bounce msg N qp P`, `end msg N`, the administrator's `hold msg N` and the like.

The SMTP logs are read first: their acceptances say which queue ids to follow in the send
log, where `TrailBuilder` follows each message from `new msg N` (N is the qid of the
`accepted` line) to `end msg N`, each delivery D from its start to its result, and a bounce
into the bounce message it made (its `info msg` carries the `qp` of `bounce msg N qp P`).
A queue id is an inode number and is used again once its message is gone, and delivery
numbers start again at 1 when the send service restarts; the builder only ties lines
together while their message or delivery is open, so neither is mixed up.
"""

from __future__ import annotations

import re
import time as _time  # `time` is the name of every record's time field here
from dataclasses import asdict, dataclass, field
from typing import Any

from .logs import logsafe
from .logtools import parser as sendlog
from .logtools.periods import PeriodError, parse_time
from .smtp import replies

# How far the clocks of two services' log lines may disagree: the send service can log
# `new msg N` a moment before the SMTP service logs its `accepted qid=N` (the 250 is sent
# after the commit wakes the send service). Lines are stamped by one machine's clock, so a
# few seconds is plenty.
CLOCK_SLACK_SECONDS = 5.0
# How long after its acceptance a message's `new msg` line may come and still be tied to it:
# the send service picks new mail up at once, but waits while it is stopped. A day covers a
# send service down overnight (the same bound as xwebmail's, logtools/webmail.py).
ACCEPT_LOOKBACK_SECONDS = 86_400.0
# The longest query we take: a Message-ID is logged up to smtp/msgid.MAX_MSGID_LENGTH.
MAX_QUERY_LENGTH = 320

_QID_RE = re.compile(r"[0-9]{1,20}")
_ACCEPTED_RE = re.compile(r"accepted qid=([0-9]+) size=([0-9]+) from=<([^ ]*)> to=([^ ]*) "
                          r"ip=([^ ]+) protocol=([^ ]+)((?: [^ =]+=[^ ]*)*)$")
# The value may hold spaces (smtp/loglines.reject): the fixed fields after it anchor the end.
_REJECT_RE = re.compile(r"reject ip=([^ ]+) rule=([^ ]+) value=(.*) "
                        r"reply=([0-9]{3}(?: [245]\.[0-9]{1,3}\.[0-9]{1,3})?)"
                        r"(?: from=<([^ ]*)>)?(?: session=([^ ]+))?$", re.S)
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
_ANGLED_RE = re.compile(r"<([^<>]*)>")
_MAILDIR_RE = re.compile(r"maildir_([^_/]+)_([^/]+)(?:/|$)")
_SPAM_RE = re.compile(r"spam_score_(-?[0-9.]+)(?:/|$)")


class TrailError(ValueError):
    """A query the trail cannot look for; the text says what is allowed."""


# ---- the query -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """What to look for. `kind` is "qid", "msgid" or "address"; `text` is as compared: the
    digits of a queue id, a Message-ID without brackets, an address lower-cased. An
    address query also finds a message whose Message-ID is that text (both hold an @)."""

    kind: str
    text: str

    def smtp_needle(self) -> bytes:
        """What a line of the SMTP logs must contain (compared lower-cased for an address)."""
        if self.kind == "qid":
            return f"accepted qid={self.text} ".encode()
        if self.kind == "msgid":
            return f"msgid=<{logsafe(self.text)}>".encode("utf-8", "surrogateescape")
        return logsafe(self.text).encode("utf-8", "surrogateescape")

    @property
    def folds_case(self) -> bool:
        return self.kind == "address"


def query_of(text: str) -> Query:
    """The query for what an administrator typed: digits are a queue id, `<...>` a
    Message-ID, anything else with an @ an address (or a Message-ID written without
    brackets). TrailError for anything else."""
    t = text.strip()
    if not t:
        raise TrailError("nothing to look for: give an address (user@example.com), a "
                         "Message-ID (<id@host>) or a queue id (digits)")
    if len(t) > MAX_QUERY_LENGTH:
        raise TrailError(f"the query is {len(t)} characters long; at most "
                         f"{MAX_QUERY_LENGTH} are allowed")
    if _QID_RE.fullmatch(t):
        return Query("qid", str(int(t)))
    if t.startswith("<") and t.endswith(">") and len(t) > 2:
        inner = t[1:-1].strip()
        if inner and not any(c.isspace() or c in "<>" for c in inner):
            return Query("msgid", inner)
    elif "@" in t and not any(c.isspace() or c in "<>" for c in t):
        return Query("address", t.lower())
    raise TrailError(f"{text!r} is not an address (user@example.com), a Message-ID "
                     "(<id@host>) or a queue id (digits)")


def since_of(text: str, now: float | None = None) -> float:
    """The unix time of a `--since` value: a period back from now (`3 days`, `12h`), a local
    date (`2026-11-30`, `2026-11-30 08:00`) or epoch seconds. TrailError names the value."""
    try:
        return parse_time(text, now)
    except PeriodError as exc:
        raise TrailError(f"--since {text!r}: {exc}") from None


def show_time(t: float | None) -> str:
    """A time as the trail prints it: local time to the second ("" for None)."""
    return "" if t is None else _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t))


# ---- the records -----------------------------------------------------------------------------


@dataclass
class Acceptance:
    """An `accepted` line: the message was queued and the client told 250."""

    time: float
    service: str
    qid: int
    size: int
    sender: str
    recipients: list[str]
    ip: str
    protocol: str
    user: str = ""
    tls: str | None = None  # None: a line of a version that did not log it
    helo: str | None = None
    msgid: str = ""
    filters: list[str] = field(default_factory=list)
    session: str = ""
    reply: str = ""

    def involves(self, query: Query) -> bool:
        if query.kind == "qid":
            return str(self.qid) == query.text
        if query.kind == "msgid":
            return self.msgid == logsafe(query.text)
        safe = logsafe(query.text)
        return (self.sender.lower() == safe or self.msgid.lower() == safe
                or any(r.lower() == safe for r in self.recipients))


@dataclass
class Refusal:
    """A `reject` line: the client was refused at SMTP time."""

    time: float
    service: str
    ip: str
    rule: str
    value: str
    reply: str  # code and enhanced status, e.g. "550 5.1.1"
    text: str  # the reply's text from the table, when it is fixed ("" otherwise)
    sender: str | None
    session: str

    def involves(self, query: Query) -> bool:
        if query.kind != "address":
            return False
        safe = logsafe(query.text)
        value = self.value.lower()
        return (_address_in(value) == safe or (self.sender or "").lower() == safe)


@dataclass
class Attempt:
    """One delivery attempt to one recipient: `starting delivery D` and its result."""

    delivery: int
    started: float
    channel: str  # "local" or "remote"
    recipient: str
    result: str | None = None  # success, deferral, failure, mangled; None while under way
    finished: float | None = None
    report: str = ""  # decoded for reading
    remote_host: str = ""
    maildir_folder: str = ""
    maildir_file: str = ""
    spam_score: str = ""


@dataclass
class MessageTrail:
    """One message: its acceptance, what the send log says of it, its bounce."""

    qid: int
    first_seen: float
    accepted: Acceptance | None = None
    size: int | None = None
    sender: str | None = None
    uid: int | None = None
    qp: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # hold, release, ... by the admin
    bounced: float | None = None
    bounce_qid: int | None = None  # the bounce message it made, when the trail saw it
    bounce_of: int | None = None  # for a bounce: the message it reports on
    ended: float | None = None
    in_send_log: bool = False

    @property
    def recipients(self) -> dict[str, str]:
        """Each recipient's state after its last attempt: delivered, failed, deferred,
        in delivery; recipients of the acceptance not yet tried are "queued"."""
        states: dict[str, str] = {}
        if self.accepted is not None:
            for r in self.accepted.recipients:
                states[r.lower()] = "queued"
        for a in self.attempts:
            key = sendlog.mailbox_address(a.recipient).lower()
            states[key] = _RESULT_STATE.get(a.result or "", "in delivery")
        return states

    @property
    def state(self) -> str:
        """accepted (not yet in the send log), queued, in delivery, deferred, held, delivered,
        failed, bounced, deleted (by the administrator)."""
        if not self.in_send_log:
            return "accepted"
        if self.bounced is not None:
            return "bounced"
        last_action = self.actions[-1]["action"] if self.actions else ""
        if last_action == "delete":
            return "deleted"
        states = set(self.recipients.values())
        if self.ended is not None:
            return "delivered" if states <= {"delivered"} else "failed"
        if last_action == "hold":
            return "held"
        if "deferred" in states:
            return "deferred"
        if "in delivery" in states:
            return "in delivery"
        return "queued"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state
        out["recipients"] = self.recipients
        return out


_RESULT_STATE = {"success": "delivered", "failure": "failed", "deferral": "deferred",
                 "mangled": "deferred"}


@dataclass
class Trail:
    """The answer: the messages (oldest first) and the refusals."""

    query: Query
    messages: list[MessageTrail]
    refusals: list[Refusal]

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        """As JSON; with `limit`, only the newest `limit` messages and refusals, and how many
        of each were left out."""
        messages, refusals = self.messages, self.refusals
        if limit is not None:
            messages, refusals = messages[-limit:], refusals[-limit:]
        return {"query": asdict(self.query),
                "messages": [m.to_json() for m in messages],
                "refusals": [asdict(r) for r in refusals],
                "left_out": {"messages": len(self.messages) - len(messages),
                             "refusals": len(self.refusals) - len(refusals)}}


# ---- one function per kind of line -----------------------------------------------------------


def accepted_line(service: str, time: float, text: str) -> Acceptance | None:
    """The acceptance an SMTP log line records, or None if it is not an `accepted` line."""
    m = _ACCEPTED_RE.match(text)
    if m is None:
        return None
    fields = dict(item.split("=", 1) for item in m[7].split())
    msgid = fields.get("msgid", "")
    qid = int(m[1])
    return Acceptance(
        time=time, service=service, qid=qid, size=int(m[2]), sender=m[3],
        recipients=_ANGLED_RE.findall(m[4]), ip=m[5], protocol=m[6],
        user=fields.get("user", ""), tls=fields.get("tls"), helo=fields.get("helo"),
        msgid=msgid[1:-1] if msgid.startswith("<") and msgid.endswith(">") else msgid,
        filters=[f for f in fields.get("filters", "").split(",") if f],
        session=fields.get("session", ""), reply=_reply_text(replies.QUEUED, qid=qid))


def reject_line(service: str, time: float, text: str) -> Refusal | None:
    """The refusal an SMTP log line records, or None if it is not a `reject` line."""
    m = _REJECT_RE.match(text)
    if m is None:
        return None
    rule, value = m[2], m[3]
    table = getattr(replies, rule, None)
    text_ = table.text if isinstance(table, replies.Reply) else ""
    return Refusal(time=time, service=service, ip=m[1], rule=rule, value=value, reply=m[4],
                   text=_fill(text_, _address_in(value), m[1]), sender=m[5],
                   session=m[6] or "")


def _fill(template: str, address: str, ip: str) -> str:
    """A reply's text from the table with what the log line tells (the address, the ip);
    any other placeholder is shown as `...`: the log does not keep it."""
    known = {"address": address, "ip": ip}
    return _PLACEHOLDER_RE.sub(lambda p: known.get(p[1], "..."), template)


def _reply_text(reply: replies.Reply, **values: object) -> str:
    return f"{reply.short()} {reply.format(**values).text}"


def _address_in(value: str) -> str:
    """The address a refusal's value names: `<a@b>`, `a@b`, or `<a@b> user=...`."""
    m = _ANGLED_RE.search(value)
    if m:
        return m[1]
    return value.split(" ", 1)[0]


def report_details(attempt: Attempt, raw: str) -> None:
    """What a delivery report (still encoded as logged) says beyond its text: the remote
    host, and for a local delivery the Maildir folder and file and the spam score."""
    attempt.report = sendlog.decode_report(raw)
    if attempt.channel == "remote":
        attempt.remote_host = sendlog.remote_host(raw)
        return
    m = _MAILDIR_RE.search(raw)
    if m:
        attempt.maildir_folder, attempt.maildir_file = m[1], m[2]
    m = _SPAM_RE.search(raw)
    if m:
        attempt.spam_score = m[1]


# ---- following messages through the logs -------------------------------------------------------


class TrailBuilder:
    """Collects a query's trail from the SMTP logs (all of them first), then the send log.

    `smtp_line` and `send_line` take one line each (its unix time and text, in time order
    within each log); `send_needles` says which bytes a send-log line must hold to matter
    now, so that the reader parses only those (see trail_logs.py)."""

    def __init__(self, query: Query) -> None:
        self.query = query
        self.refusals: list[Refusal] = []
        self._expected: dict[int, list[Acceptance]] = {}  # qid -> acceptances not yet tied
        self._accepted: list[Acceptance] = []
        self._open: dict[int, MessageTrail] = {}  # qid -> message between new and end msg
        self._deliveries: dict[int, tuple[MessageTrail, Attempt]] = {}
        self._bounce_qps: dict[int, MessageTrail] = {}  # qp of a bounce -> the bounced message
        self._done: list[MessageTrail] = []
        self._activated = 0  # acceptances (in time order) whose qid is followed

    # ---- the SMTP logs ----
    def smtp_line(self, service: str, time: float, text: str) -> None:
        if text.startswith("accepted "):
            a = accepted_line(service, time, text)
            if a is not None and a.involves(self.query):
                self._accepted.append(a)
        elif text.startswith("reject "):
            r = reject_line(service, time, text)
            if r is not None and r.involves(self.query):
                self.refusals.append(r)

    def smtp_done(self) -> None:
        """The SMTP logs are read: order what they gave, for the send log."""
        self._accepted.sort(key=lambda a: a.time)
        self.refusals.sort(key=lambda r: r.time)

    # ---- the send log ----
    def send_needles(self, until: float) -> tuple[set[int], bool, set[int], set[int]]:
        """What matters in send-log lines up to `until`: (queue ids of open messages and of
        a queue-id query, whether a `new msg` line may start an awaited message (`awaits`
        tells which), delivery numbers, qps)."""
        accepted = self._accepted
        while (self._activated < len(accepted)
               and accepted[self._activated].time <= until + CLOCK_SLACK_SECONDS):
            a = accepted[self._activated]
            self._expected.setdefault(a.qid, []).append(a)
            self._activated += 1
        qids = set(self._open)
        if self.query.kind == "qid":
            qids.add(int(self.query.text))
        return qids, bool(self._expected), set(self._deliveries), set(self._bounce_qps)

    def awaits(self, qid: int) -> bool:
        """Whether a `new msg` of `qid` starts a message accepted at SMTP time."""
        return qid in self._expected

    def following(self) -> tuple[int, int, int, int]:
        """Changes whenever what `send_needles` gives changes (each line adds or removes
        at most a few of its numbers, never one for another of the same kind)."""
        return (len(self._open), len(self._deliveries), len(self._bounce_qps),
                len(self._expected))

    def send_line(self, time: float, text: str) -> None:
        ev = sendlog.parse(text)
        if isinstance(ev, sendlog.StartDelivery):
            self._start(time, ev)
        elif isinstance(ev, sendlog.DeliveryResult):
            found = self._deliveries.pop(ev.delivery, None)
            if found is not None:
                attempt = found[1]
                attempt.result, attempt.finished = ev.result, time
                report_details(attempt, ev.report)
        elif isinstance(ev, sendlog.NewMsg):
            if ev.msg in self._open or self._wanted(ev.msg):
                self._open_message(time, ev.msg)
        elif isinstance(ev, sendlog.InfoMsg):
            self._info(time, ev)
        elif isinstance(ev, sendlog.BounceMsg):
            m = self._open.get(ev.msg)
            if m is not None:
                m.bounced = time
                self._bounce_qps[ev.qp] = m
        elif isinstance(ev, sendlog.EndMsg):
            m = self._open.pop(ev.msg, None)
            if m is not None:
                m.ended = time
                self._done.append(m)
        elif isinstance(ev, sendlog.QueueAction):
            m = self._open.get(ev.msg)
            if m is not None:
                m.actions.append({"time": time, "action": ev.action, "reason": ev.reason})
        elif isinstance(ev, sendlog.Status) and text == sendlog.EXITING:
            self._deliveries.clear()  # delivery numbers start again at 1

    def _open_message(self, time: float, qid: int) -> MessageTrail:
        old = self._open.pop(qid, None)
        if old is not None:  # no `end msg` for it (a crash): it is over all the same
            self._done.append(old)
        m = MessageTrail(qid=qid, first_seen=time, in_send_log=True)
        m.accepted = self._take_acceptance(qid, time)
        self._open[qid] = m
        return m

    def _take_acceptance(self, qid: int, time: float) -> Acceptance | None:
        """The acceptance of `qid` this message is: the latest one before it (within the
        slack); older ones of the same qid are messages whose send-log lines were not seen."""
        waiting = self._expected.get(qid)
        if not waiting:
            return None
        chosen = None
        while waiting and waiting[0].time <= time + CLOCK_SLACK_SECONDS:
            a = waiting.pop(0)
            if chosen is not None:
                self._done.append(_unseen(chosen))
            chosen = a
        if not waiting:
            del self._expected[qid]
        if chosen is not None and time - chosen.time > ACCEPT_LOOKBACK_SECONDS:
            self._done.append(_unseen(chosen))
            return None
        return chosen

    def _wanted(self, qid: int) -> bool:
        return qid in self._expected or (self.query.kind == "qid" and str(qid) == self.query.text)

    def _info(self, time: float, ev: sendlog.InfoMsg) -> None:
        m = self._open.get(ev.msg)
        if m is None:
            parent = self._bounce_qps.get(ev.qp) if ev.sender == "" else None
            if parent is None and not (self._wanted(ev.msg) or self._is_query(ev.sender)):
                return
            m = self._open_message(time, ev.msg)
            if parent is not None:
                del self._bounce_qps[ev.qp]
                parent.bounce_qid, m.bounce_of = ev.msg, parent.qid
        m.size, m.sender, m.uid, m.qp = ev.bytes, ev.sender, ev.uid, ev.qp

    def _start(self, time: float, ev: sendlog.StartDelivery) -> None:
        self._deliveries.pop(ev.delivery, None)  # a number used again after a crash
        m = self._open.get(ev.msg)
        if m is None:
            if not self._is_query(sendlog.mailbox_address(ev.recipient)):
                return
            m = self._open_message(time, ev.msg)
        attempt = Attempt(ev.delivery, time, ev.channel, sendlog.mailbox_address(ev.recipient))
        m.attempts.append(attempt)
        self._deliveries[ev.delivery] = (m, attempt)

    def _is_query(self, address: str) -> bool:
        return self.query.kind == "address" and address.lower() == logsafe(self.query.text)

    def finish(self) -> Trail:
        """The trail so far: messages still open are still in the queue."""
        messages = self._done + list(self._open.values())
        messages += [_unseen(a) for waiting in self._expected.values() for a in waiting]
        messages += [_unseen(a) for a in self._accepted[self._activated:]]
        messages.sort(key=lambda m: m.accepted.time if m.accepted else m.first_seen)
        return Trail(self.query, messages, self.refusals)


def _unseen(a: Acceptance) -> MessageTrail:
    """A message accepted at SMTP time whose send-log lines were not found (yet)."""
    return MessageTrail(qid=a.qid, first_seen=a.time, accepted=a)
