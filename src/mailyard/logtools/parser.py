"""Read one qmail-send log message (the text after the stamp) into a typed event.

The formats are qmail-send's (qmail 1.03 / netqmail qmail-send.c and qsutil.c):

    new msg N
    info msg N: bytes B from <SENDER> qp P uid U
    starting delivery D: msg N to local|remote RECIPIENT
    delivery D: success|deferral|failure: REPORT
    delivery D: report mangled, will defer
    end msg N
    bounce msg N qp P
    triple bounce: discarding bounce/N
    double bounce: discarding bounce/N
    status: local L/LMAX remote R/RMAX
    status: exiting

and the lines our node adds to that vocabulary for what its administrator does to a queued
message (src/mailyard/delivery/sendlog.py and queue_actions.py):

    hold msg N: REASON                (REASON: `administrator` or `rate limit ADDRESS`)
    release msg N
    retry msg N
    warning: msg N deleted by the administrator
    warning: msg N bounced by the administrator...
    warning: local|remote deliveries of msg N purged by the administrator


N is the message's inode number (reused once the message is gone), D a delivery counter that
restarts at 1 when qmail-send restarts.  Every other line (warnings, alerts) is an `Other`
event.  `parse` never raises: text that starts like a known line but does not fit it is
`Malformed`.

New vocabulary plugs in at the end of a known line: text after the last field of a `starting
delivery`, `info msg`, `new msg`, `end msg`, `bounce msg` or `... bounce: discarding` line
(one space, then anything, e.g. a `tls=...` note another part of the node adds) is carried in
the event's `extra` and is not an error; after `delivery D: RESULT:` it is part of the report.
A wholly new kind of line is an `Other` event until a type and a branch of `parse` (and of
the block patterns in `blocks.py`) are added for it.

Addresses and reports are written through qmail's `logsafe`, which turns a newline into `/`
and a space, `%`, control character or 8-bit byte into `_`.  `decode_report` undoes what can
be undone (see its docstring and docs/logtools.md).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class NewMsg(NamedTuple):
    msg: int


class InfoMsg(NamedTuple):
    msg: int
    bytes: int
    sender: str  # "" for the null sender <> of bounces
    qp: int
    uid: int
    extra: str = ""  # text after the uid, carried (see the module docstring)


class StartDelivery(NamedTuple):
    delivery: int
    msg: int
    channel: str  # "local" or "remote"
    recipient: str  # as logged (a virtual domain's local recipient keeps its prefix)
    extra: str = ""  # text after the recipient, carried


class DeliveryResult(NamedTuple):
    delivery: int
    result: str  # "success", "deferral", "failure" or "mangled" (qmail defers those)
    report: str  # as logged, still encoded


class EndMsg(NamedTuple):
    msg: int


class BounceMsg(NamedTuple):
    msg: int
    qp: int


class TripleBounce(NamedTuple):
    """`triple bounce: discarding bounce/N` or `double bounce: discarding bounce/N`: the
    bounce N could not be delivered and is thrown away (`double` is True for the latter)."""

    msg: int
    double: bool = False


class QueueAction(NamedTuple):
    """What the administrator did to queued message N: `action` is hold, release, retry,
    delete, bounce, purge-local or purge-remote; `reason` the hold's reason ("" otherwise)."""

    msg: int
    action: str
    reason: str = ""


class Status(NamedTuple):
    text: str


class Other(NamedTuple):
    text: str


class Malformed(NamedTuple):
    text: str


Event = (NewMsg | InfoMsg | StartDelivery | DeliveryResult | EndMsg | BounceMsg | TripleBounce
         | QueueAction | Status | Other | Malformed)

# `[0-9]` rather than `\d`: qmail writes ASCII digits, and int() must not see other digits.
_INFO_RE = re.compile(r"info msg ([0-9]+): bytes ([0-9]+) from <(.*)> qp ([0-9]+) uid ([0-9]+)"
                      r"(?: (.*))?$", re.S)
_START_RE = re.compile(r"starting delivery ([0-9]+): msg ([0-9]+) to (local|remote) ([^ ]*)"
                       r"(?: (.*))?$", re.S)
_RESULT_RE = re.compile(r"delivery ([0-9]+): (success|deferral|failure): ?(.*)$", re.S)
_MANGLED_RE = re.compile(r"delivery ([0-9]+): report mangled, will defer$")
_BOUNCE_RE = re.compile(r"bounce msg ([0-9]+) qp ([0-9]+)(?: (.*))?$", re.S)
_DISCARD_RE = re.compile(r"(triple|double) bounce: discarding bounce/([0-9]+)(?: (.*))?$", re.S)
_NUMBER_RE = re.compile(r"([0-9]+)(?: .*)?$", re.S)
_HOLD_RE = re.compile(r"hold msg ([0-9]+): (.+)$", re.S)
# The administrator's actions our node logs as warnings (delete, bounce, purge).
_ADMIN_RE = re.compile(r"warning: (?:msg ([0-9]+) (deleted|bounced) by the administrator"
                       r"|(local|remote) deliveries of msg ([0-9]+) purged by the administrator)"
                       r"(?:$|[ .;:,])", re.S)
_ADMIN_ACTION = {"deleted": "delete", "bounced": "bounce"}

EXITING = "status: exiting"  # qmail-send's last line on a clean stop; delivery numbers restart


def _number(text: str) -> int | None:
    """The message number at the start of `text` (extra text after a space is carried)."""
    m = _NUMBER_RE.match(text)
    return int(m[1]) if m else None


def parse(text: str) -> Event:
    """The event that a qmail-send log message `text` records."""
    c = text[:1]
    if c == "s":
        if text.startswith("status:"):
            return Status(text)
        if text.startswith("starting delivery "):
            m = _START_RE.match(text)
            if m:
                return StartDelivery(int(m[1]), int(m[2]), m[3], m[4], m[5] or "")
            return Malformed(text)
    elif c == "d":
        if text.startswith("delivery "):
            m = _RESULT_RE.match(text)
            if m:
                return DeliveryResult(int(m[1]), m[2], m[3])
            m = _MANGLED_RE.match(text)
            if m:
                return DeliveryResult(int(m[1]), "mangled", "")
            return Malformed(text)
        if text.startswith("double bounce: "):
            return _discard(text)
    elif c == "n":
        if text.startswith("new msg "):
            n = _number(text[8:])
            return NewMsg(n) if n is not None else Malformed(text)
    elif c == "i":
        if text.startswith("info msg "):
            m = _INFO_RE.match(text)
            if m:
                return InfoMsg(int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5]), m[6] or "")
            return Malformed(text)
    elif c == "e":
        if text.startswith("end msg "):
            n = _number(text[8:])
            return EndMsg(n) if n is not None else Malformed(text)
    elif c == "b":
        if text.startswith("bounce msg "):
            m = _BOUNCE_RE.match(text)
            return BounceMsg(int(m[1]), int(m[2])) if m else Malformed(text)
    elif c == "t":
        if text.startswith("triple bounce: "):
            return _discard(text)
    elif c == "h":
        if text.startswith("hold msg "):
            m = _HOLD_RE.match(text)
            return QueueAction(int(m[1]), "hold", m[2]) if m else Malformed(text)
    elif c == "r":
        for action in ("release", "retry"):
            if text.startswith(f"{action} msg "):
                n = _number(text[len(action) + 5:])
                return QueueAction(n, action) if n is not None else Malformed(text)
    elif c == "w":
        if text.startswith("warning: ") and text.find(" by the administrator", 9) > 0:
            m = _ADMIN_RE.match(text)
            if m:
                if m[1]:
                    return QueueAction(int(m[1]), _ADMIN_ACTION[m[2]])
                return QueueAction(int(m[4]), f"purge-{m[3]}")
    return Other(text)


def _discard(text: str) -> Event:
    m = _DISCARD_RE.match(text)
    return TripleBounce(int(m[2]), m[1] == "double") if m else Malformed(text)


# ---- addresses --------------------------------------------------------------------------------

def domain_of(address: str) -> str:
    """The domain of an address, lower-cased; "" for the null sender or a bare local part."""
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else ""


def mailbox_address(recipient: str) -> str:
    """A local recipient without the virtual-domain prefix qmail-send puts in front of it.

    With `example.com:example.com` in virtualdomains (the vpopmail convention, and ours),
    qmail-send delivers `user@example.com` locally as `example.com-user@example.com`.  The
    prefix is removed when it equals the domain; any other prefix cannot be told apart from
    a local part containing a dash, so it is left alone.
    """
    at = recipient.rfind("@")
    if at < 0:
        return recipient
    domain = recipient[at + 1:]
    prefix = domain + "-"
    if recipient[:len(prefix)].lower() == prefix.lower():
        return recipient[len(prefix):]
    return recipient


# ---- delivery reports ---------------------------------------------------------------------------

# `scheme://...` runs are kept whole when `/` is turned back into line breaks, so that the links
# remote servers put in their replies (Gmail: https://support.google.com/mail/?p=...) survive.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^_\s]*")
LINE_SEPARATOR = " / "
_REPLY_LINE_RE = re.compile(r"/(?=\d{3}[ -])")


def decode_report(report: str) -> str:
    """A delivery report as readable text on one line.

    Undone: `_` becomes a space (qmail's logsafe wrote every space as `_`; it also wrote tabs,
    control characters, `%` and 8-bit bytes as `_`, which cannot be told apart, so they come
    back as spaces too); `/` is qmail's newline: the final one is dropped and each inner one
    is shown as " / ", except inside a URL (`scheme://...`), whose slashes are kept.
    A `/` that was a literal slash outside a URL is therefore shown as " / ".
    """
    text = report.replace("_", " ")
    if text.endswith("/"):
        text = text[:-1]
    if "/" not in text:
        return text.strip()
    out: list[str] = []
    pos = 0
    for m in _URL_RE.finditer(text):
        out.append(text[pos:m.start()].replace("/", LINE_SEPARATOR))
        # A URL at the end of a reply line runs into that line's `/` newline when the next
        # line starts like an SMTP reply line ("550-5.1.1", "250 ok"): cut it there.
        end = m.end()
        nl = _REPLY_LINE_RE.search(text, m.start(), end + 4)
        if nl and nl.start() < end:
            out.append(text[m.start():nl.start()] + LINE_SEPARATOR)
            out.append(text[nl.start() + 1:end].replace("/", LINE_SEPARATOR))
        else:
            out.append(m.group(0))
        pos = end
    out.append(text[pos:].replace("/", LINE_SEPARATOR))
    return "".join(out).strip()


_ACCEPTED_RE = re.compile(r"^([^_/]+)_(?:accepted_message|does_not_like_(?:recipient|sender))\.")
_CONNECTED_RE = re.compile(r"(?:Connected_to_([^_/]+)_but|Giving_up_on_([^_/]+?)\.?(?:/|$))")
_HOSTNAMED_RE = re.compile(r"host_named_([^_/]+?)\.?(?:_|/|$)")


def remote_host(report: str) -> str:
    """The remote server named in a qmail-remote report (still encoded), or "" if none.

    qmail-remote starts its report with "IP accepted message." or "IP does not like
    recipient.", says "Connected to IP but ..." when a server refused at another step and
    "Giving up on IP." at the end of a permanent failure; a DNS failure names the host it
    could not find.
    """
    for rx in (_ACCEPTED_RE, _CONNECTED_RE):
        m = rx.search(report)
        if m:
            return next(g for g in m.groups() if g)
    m = _HOSTNAMED_RE.search(report)
    if m:
        return m[1]
    return ""
