"""A cheap listing of the queue for the administration: one summary per message, built from
directory listings and each message's small envelope file, never from the message text.

The envelope of a message (todo/N, then info/N) is written once and never changed, so its
summary is kept in a per-process cache, keyed by the queue id, the directory and the inode of
the envelope file. Each listing reads the directories todo/, info/, local/, remote/, bounce/,
hold/ and attempts/ once; what a message's recipients are doing (done marks, attempt counts,
failures) is read from its own files only for the messages asked about (`recipients`).

A queue id is an inode number and comes back once its message is gone; the file system may
also give the new envelope the old envelope's inode. A message that replaced another between
two listings can therefore be sorted and filtered by its predecessor's envelope in the cached
listing. What is shown of a message (`one`) and what an action is applied to is always read
afresh (queue/admin.py checks the filter again on the fresh envelope), and reading it
afresh puts it right in the cache.
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from . import attempts as qattempts
from . import holds
from . import state as qstate
from .envelope import Envelope
from .layout import Queue


@dataclass
class Summary:
    id: str
    time: float
    size: int
    sender: str
    recipients: list[str]
    client_ip: str | None
    helo: str | None
    auth_user: str | None
    protocol: str = ""
    uid: int | None = None
    qp: int = 0
    channels: set[str] = field(default_factory=set)  # todo, local, remote: work to do there
    held: bool = False
    deferred_once: bool = False  # attempts/N exists: some recipient was deferred
    bounce_pending: bool = False  # bounce/N exists: some recipient failed
    order: tuple[float, int] = (0.0, 0)  # oldest first; the id breaks ties
    attempts_inode: int = 0  # of attempts/N (replaced by a rename at each deferral)


@dataclass
class RecipientInfo:
    address: str
    channel: str | None  # local, remote, todo before the split; None once unknown (below)
    done: bool
    state: str  # pending | deferred | done | failed
    attempts: int
    last_reply: str | None
    next_retry: str | None  # ISO 8601 time, or None (not deferred, or held)


_CACHE: dict[str, dict[str, tuple[tuple[str, int], Summary]]] = {}
_CACHE_LOCK = threading.Lock()


def _names(q: Queue, state: str) -> dict[str, int]:
    """Queue ids in one state directory with the inode of each file (from the listing)."""
    try:
        with os.scandir(q.root / state) as entries:
            return {e.name: e.inode() for e in entries if e.name.isdigit()}
    except FileNotFoundError:
        return {}


def _read_envelope(q: Queue, state: str, qid: str) -> Envelope | None:
    try:
        with open(q.file(state, qid), "rb") as f:
            return Envelope.from_bytes(f.read())
    except (OSError, ValueError, TypeError):
        return None


def summaries(q: Queue, flags: bool = True) -> list[Summary]:
    """Every message in the queue, oldest first, from cached envelopes. With `flags` the
    other directories are listed too and each summary's channels, hold, deferral and bounce
    flags are set; without, only todo/ and info/ are listed and the flags are left as they
    were (for a listing that only sorts and pages: what is shown is read afresh by `one`)."""
    todo, info = _names(q, "todo"), _names(q, "info")
    with _CACHE_LOCK:
        old = _CACHE.get(str(q.root), {})
    fresh: dict[str, tuple[tuple[str, int], Summary]] = {}
    for state, names in (("info", info), ("todo", todo)):  # todo/N wins over info/N
        for qid, inode in names.items():
            key = (state, inode)
            cached = old.get(qid)
            if cached is not None and cached[0] == key:
                fresh[qid] = cached
                continue
            env = _read_envelope(q, state, qid)
            if env is not None:
                fresh[qid] = (key, _from_envelope(qid, env))
            else:
                fresh.pop(qid, None)
    with _CACHE_LOCK:
        _CACHE[str(q.root)] = fresh
    out = [entry[1] for entry in fresh.values()]
    if flags:
        local, remote = set(q.ids("local")), set(q.ids("remote"))
        bounce, held = set(q.ids("bounce")), set(q.ids(holds.HOLD_DIR))
        tried = _names(q, qattempts.ATTEMPTS_DIR)
        for summary in out:
            qid = summary.id
            summary.channels = {"todo"} if qid in todo else \
                {c for c, ids in (("local", local), ("remote", remote)) if qid in ids}
            summary.held = qid in held
            summary.deferred_once = qid in tried
            summary.attempts_inode = tried.get(qid, 0)
            summary.bounce_pending = qid in bounce
    out.sort(key=attrgetter("order"))
    if len(_DEFERRED) > 2 * len(out) + 1000:  # forget messages long gone
        root = str(q.root)
        for where in [w for w in _DEFERRED if w[0] == root and w[1] not in fresh]:
            _DEFERRED.pop(where, None)
    return out


def _from_envelope(qid: str, env: Envelope) -> Summary:
    return Summary(qid, env.time, env.size, env.sender, list(env.recipients), env.client_ip,
                   env.helo, env.auth_user, env.protocol, env.uid, env.qp,
                   order=(env.time, int(qid)))


def one(q: Queue, qid: str) -> Summary | None:
    """The summary of one message, or None when it is not in the queue."""
    in_todo = os.path.exists(q.file("todo", qid))
    env = _read_envelope(q, "todo" if in_todo else "info", qid)
    if env is None:
        return None
    summary = _from_envelope(qid, env)
    summary.channels = {"todo"} if in_todo else \
        {c for c in qstate.CHANNELS if os.path.exists(q.file(c, qid))}
    summary.held = holds.is_held(q, qid)
    summary.deferred_once = os.path.exists(q.file(qattempts.ATTEMPTS_DIR, qid))
    summary.bounce_pending = os.path.exists(q.file("bounce", qid))
    _remember(q, "todo" if in_todo else "info", summary)
    return summary


def _remember(q: Queue, state: str, summary: Summary) -> None:
    """Put a summary read afresh into the cache (under its envelope file's inode)."""
    try:
        inode = os.stat(q.file(state, summary.id)).st_ino
    except OSError:
        return
    with _CACHE_LOCK:
        entries = _CACHE.get(str(q.root))
        if entries is not None:
            entries[summary.id] = ((state, inode), summary)


def iso_time(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(float(when), datetime.UTC).isoformat(
        timespec="seconds")


def recipients(q: Queue, summary: Summary) -> list[RecipientInfo]:
    """Each recipient of one message with its state, attempts, last reply and next retry."""
    if "todo" in summary.channels:
        return [RecipientInfo(r, "todo", False, "pending", 0, None, None)
                for r in summary.recipients]
    stored = qstate.load_message(q, summary.id)
    if stored is None:
        return []
    records = qattempts.read(q, summary.id) if summary.deferred_once else {}
    failures = {r.recipient: r for r in qstate.read_bounce_reports(q, summary.id)} \
        if summary.bounce_pending else {}
    out: list[RecipientInfo] = []
    for channel in qstate.CHANNELS:
        for r in stored.recipients[channel]:
            record: dict[str, Any] = records.get(r.address, {})
            tries = int(record.get("attempts", 0) or 0)
            reply = record.get("last_reply")
            retry: str | None = None
            if r.done and r.address in failures:
                state, tries = "failed", tries + 1
                report = failures[r.address]
                reply = report.diagnostic or report.text
            elif r.done:
                state = "done"
            elif tries:
                state = "deferred"
                retry = None if summary.held else iso_time(record.get("next_retry"))
            else:
                state = "pending"
            out.append(RecipientInfo(r.address, channel, r.done, state, tries,
                                     str(reply) if reply is not None else None, retry))
    # A channel whose recipients were all done has no file any more: its recipients are the
    # envelope's others, and their channel is known when the other file is still there.
    listed = {r.address for r in out}
    present = [c for c in qstate.CHANNELS if stored.recipients[c]]
    gone = next(c for c in qstate.CHANNELS if c not in present) if len(present) == 1 else None
    for address in stored.envelope.recipients:
        if address in listed:
            continue
        listed.add(address)
        record = records.get(address, {})
        tries = int(record.get("attempts", 0) or 0)
        if address in failures:
            report = failures[address]
            out.append(RecipientInfo(address, gone, True, "failed", tries + 1,
                                     report.diagnostic or report.text, None))
        else:
            out.append(RecipientInfo(address, gone, True, "done", tries,
                                     record.get("last_reply"), None))
    return out


# Whether a message has a deferred recipient, by queue and id, under the key (inode of its
# attempts file, channels with work to do): a deferral replaces attempts/N (a new inode) and
# a channel whose recipients are all done loses its file. The one change the key misses, a
# message whose deferred recipients all finished while others never tried remain in the
# same channel file, lasts until its next deferral or its end; actions never use this
# cache (`has_state(..., cached=False)`).
_DEFERRED: dict[tuple[str, str], tuple[tuple[int, frozenset[str]], bool]] = {}


def has_state(q: Queue, summary: Summary, state: str, cached: bool = True) -> bool:
    """Whether some recipient of the message is in `state`, reading its files only when the
    directory listing cannot tell (deferred recipients, or a `done` filter)."""
    if "todo" in summary.channels:
        return state == "pending"
    if state == "failed":
        return summary.bounce_pending  # bounce/N holds the reports of failed recipients
    if not summary.deferred_once:  # never deferred: every recipient to do is pending
        if state == "pending":
            return bool(summary.channels)
        if state == "deferred":
            return False
    if state == "deferred":  # the attempt records and the channel files are enough
        key = (summary.attempts_inode, frozenset(summary.channels))
        where = (str(q.root), summary.id)
        known = _DEFERRED.get(where) if cached and summary.attempts_inode else None
        if known is not None and known[0] == key:
            return known[1]
        records = qattempts.read(q, summary.id)
        found = any(not r.done and int(records.get(r.address, {}).get("attempts", 0) or 0)
                    for channel in summary.channels
                    for r in qstate.read_recipients(q.path(channel, summary.id)))
        if summary.attempts_inode:
            _DEFERRED[where] = (key, found)
        return found
    return any(r.state == state for r in recipients(q, summary))
