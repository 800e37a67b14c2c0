"""Queue administration for the CLI and the panel (the guide's 7.2 and 7.3), as plain data.

Reading (stats, list, show) works at any time. Changes (delete, purge, process) are handed
to the running send service, which alone writes the queue while it runs; with no service
running they are done here under the service's lock. `reset` needs the services stopped.
"""

from __future__ import annotations

import email.utils
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..home import Home
from ..services.privileges import chown_path
from ..store.settings_store import load_settings
from . import control, holds, listing, select
from . import state as qstate
from .envelope import Envelope
from .errors import QueueError
from .layout import Queue

# How long a change waits for the running send service to carry it out.
REQUEST_WAIT_SECONDS = 15.0
# `show` returns at most this much of the message text (a queue can hold 2 GB messages).
MAX_SHOW_BYTES = 64 * 1024
PURGE_CHOICES = (*qstate.CHANNELS, "todo", "all")
LIST_CHOICES = select.WHICH_CHOICES
# Messages on one page of the API and the panel at most (the panel shows 50 by default).
MAX_PAGE = 500


@dataclass
class RecipientState:
    address: str
    # "local", "remote", or "todo" before the message is split; None when every recipient of
    # its channel is done and the message has no recipient left in the other one
    channel: str | None
    done: bool
    state: str = "pending"  # pending | deferred | done | failed
    attempts: int = 0  # delivery attempts made (deferrals, plus the final failure)
    last_reply: str | None = None  # the last remote reply or delivery report
    next_retry: str | None = None  # ISO 8601 time of the next attempt when deferred


@dataclass
class QueuedMessage:
    id: str
    date: str  # RFC 5322 date of the commit
    time: float  # Unix time of the commit
    age_seconds: int
    size: int
    sender: str
    recipients: list[RecipientState]
    status: str  # todo | local | remote | local+remote | bounce (only the bounce left to send)
    held: bool = False
    hold_reason: str | None = None
    client_ip: str | None = None
    helo: str | None = None
    auth_user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MessageDetail(QueuedMessage):
    protocol: str = ""
    uid: int | None = None
    qp: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    truncated: bool = False


def _queue(home: Home) -> Queue:
    return Queue(home.queue_dir)


def _all_ids(q: Queue) -> list[str]:
    return sorted(set(q.ids("todo")) | set(q.ids("info")), key=int)


# ---- reading ------------------------------------------------------------------------------------

def stats(home: Home) -> dict[str, int]:
    """Todo, Local and Remote message counts (the guide's Quick Stats), all messages and the
    held ones: directory listings only, never a file read."""
    q = _queue(home)
    todo, info = q.ids("todo"), q.ids("info")
    return {"todo": len(todo), "local": len(q.ids("local")), "remote": len(q.ids("remote")),
            "messages": len(set(todo).union(info)), "held": len(q.ids(holds.HOLD_DIR))}


def _status(summary: listing.Summary) -> str:
    if "todo" in summary.channels:
        return "todo"
    busy = [c for c in qstate.CHANNELS if c in summary.channels]
    return "+".join(busy) if busy else ("bounce" if summary.bounce_pending else "done")


def _item(q: Queue, summary: listing.Summary, now: float) -> QueuedMessage:
    summary = listing.one(q, summary.id) or summary  # what is shown is read afresh
    rcpts = [RecipientState(r.address, r.channel, r.done, r.state, r.attempts, r.last_reply,
                            r.next_retry) for r in listing.recipients(q, summary)]
    return QueuedMessage(
        id=summary.id, date=email.utils.formatdate(summary.time, localtime=True),
        time=summary.time, age_seconds=max(0, int(now - summary.time)), size=summary.size,
        sender=summary.sender, recipients=rcpts, status=_status(summary), held=summary.held,
        hold_reason=holds.reason(q, summary.id) if summary.held else None,
        client_ip=summary.client_ip, helo=summary.helo, auth_user=summary.auth_user)


def _selected(q: Queue, f: select.Filter, now: float) -> list[listing.Summary]:
    flags = f.held is not None or f.state is not None or f.which != "all"
    return select.select(listing.summaries(q, flags), f, now,
                         lambda s, state: listing.has_state(q, s, state))


def list_messages(home: Home, which: str = "all", sender: str | None = None,
                  recipient: str | None = None, *, domain: str | None = None,
                  older_than: str | int | None = None, state: str | None = None,
                  held: bool | None = None) -> list[QueuedMessage]:
    """Messages in the queue, oldest first; `which` picks all, local, remote or todo ones;
    `sender`/`recipient` keep those whose address contains the text (case-insensitive); the
    other criteria are those of queue/select.py."""
    f = select.make_filter(sender=sender, recipient=recipient, domain=domain,
                           older_than=older_than, state=state, held=held, which=which)
    q = _queue(home)
    now = time.time()
    return [_item(q, s, now) for s in _selected(q, f, now)]


def page(home: Home, f: select.Filter, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of the messages the filter picks, oldest first: the page's messages with
    their recipients' states, and how many messages match in all (for paging)."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise QueueError(f"offset {offset}, limit {limit}: the offset must be 0 or more and "
                         f"the limit from 1 to {MAX_PAGE}", temporary=False)
    q = _queue(home)
    now = time.time()
    chosen = _selected(q, f, now)
    return {"total": len(chosen), "offset": offset, "limit": limit,
            "messages": [_item(q, s, now) for s in chosen[offset:offset + limit]]}


def show(home: Home, qid: str) -> MessageDetail:
    """Everything about one message: envelope, recipients' states, failures, its text."""
    q = _queue(home)
    qid = str(qid).strip()
    summary = _summary(q, qid) if qid.isdigit() else None
    if summary is None:
        raise QueueError(f"no message {qid!r} in the queue (see `mailyard queue list`)",
                         temporary=False)
    item = _item(q, summary, time.time())
    try:
        with open(q.path("mess", qid), "rb") as f:
            data = f.read(MAX_SHOW_BYTES + 1)
    except FileNotFoundError:
        data = b""
    failures = [asdict(r) for r in qstate.read_bounce_reports(q, qid)]
    return MessageDetail(
        **asdict(item) | {"recipients": item.recipients},
        protocol=summary.protocol, uid=summary.uid, qp=summary.qp, failures=failures,
        message=data[:MAX_SHOW_BYTES].decode("utf-8", "replace"),
        truncated=len(data) > MAX_SHOW_BYTES)


def _summary(q: Queue, qid: str) -> listing.Summary | None:
    return listing.one(q, qid)


# ---- changing -----------------------------------------------------------------------------------

def _via_service(q: Queue, action: str, arg: str) -> dict[str, Any]:
    path = control.put_request(q, action, arg)
    done = control.wait_for_request(path, REQUEST_WAIT_SECONDS)
    return {"via": "service", "done": done}


def delete(home: Home, qid: str) -> dict[str, Any]:
    """Remove one message without delivering or bouncing it."""
    q = _queue(home)
    qid = str(qid).strip()
    if not qid.isdigit() or not (q.path("todo", qid).exists() or q.path("info", qid).exists()):
        raise QueueError(f"no message {qid!r} in the queue (see `mailyard queue list`)",
                         temporary=False)
    with control.QueueLock(q) as lock:
        if lock.try_acquire():
            qstate.remove_message(q, qid)
            return {"id": qid, "via": "direct", "done": True}
    return {"id": qid} | _via_service(q, "delete", qid)


def purge(home: Home, which: str) -> dict[str, Any]:
    """Delete every message of one queue (local, remote, todo) or all of them.

    Purging local or remote drops those deliveries only; a message that still has deliveries
    of the other kind stays for them. Nothing is bounced.
    """
    if which not in PURGE_CHOICES:
        raise QueueError(f"unknown queue {which!r}; choose one of {', '.join(PURGE_CHOICES)}",
                         temporary=False)
    q = _queue(home)
    affected = len(list_messages(home, which))
    with control.QueueLock(q) as lock:
        if lock.try_acquire():
            _purge_direct(q, which)
            return {"which": which, "messages": affected, "via": "direct", "done": True}
    return {"which": which, "messages": affected} | _via_service(q, "purge", which)


def _purge_direct(q: Queue, which: str) -> None:
    if which in ("todo", "all"):
        for qid in q.ids("todo"):
            qstate.remove_message(q, qid)
    if which == "all":
        for qid in set(q.ids("info")) | set(q.ids("mess")):
            qstate.remove_message(q, qid)
        return
    if which in qstate.CHANNELS:
        other = "remote" if which == "local" else "local"
        for qid in q.ids(which):
            qstate.finish_channel(q, which, qid)
            stored = qstate.load_message(q, qid)
            if stored is None:
                continue
            if not any(not r.done for r in stored.recipients[other]) and \
                    not stored.bounce_pending:
                qstate.remove_message(q, qid)


def process(home: Home) -> dict[str, Any]:
    """Make every waiting message due now (the guide's Process Mail Queue)."""
    q = _queue(home)
    waiting = len(_all_ids(q))
    if not control.service_running(q):
        return {"waiting": waiting, "service_running": False, "done": False}
    return {"waiting": waiting, "service_running": True} | _via_service(q, "flush", "-")


# ---- actions on a selection ---------------------------------------------------------------------

# What `act` does to each message it selects:
#   hold     never delivered until released (holds.py), kept across restarts
#   release  the hold is lifted and the message is due now
#   retry    due now (a held message stays held)
#   bounce   every recipient still to do fails now; the sender gets a DSN (RFC 3464)
#   delete   removed without delivery or bounce
ACTIONS = ("hold", "release", "retry", "bounce", "delete")
# The text of the failure report of a recipient the administrator bounced with `send` stopped
# (the running service writes its own, naming the host: delivery/queue_actions.py).
DIRECT_BOUNCE_TEXT = "This message was returned to you by the administrator of this server."
DIRECT_BOUNCE_STATUS = "5.0.0"


def select_ids(home: Home, ids: list[str] | None = None,
               f: select.Filter | None = None) -> tuple[list[str], list[str]]:
    """The queue ids an action applies to, oldest first, and the given ids not in the queue.

    With ids and a filter, the ids the filter keeps; with neither, QueueError: an action on
    the whole queue is `purge`, or a filter such as `--older-than 0`."""
    given = [str(i).strip() for i in ids or []]
    bad = [i for i in given if not i.isdigit()]
    if bad:
        raise QueueError(f"{bad[0]!r} is not a queue id (a number, as `mailyard queue list` "
                         "shows)", temporary=False)
    f = f or select.Filter()
    if not given and f.empty():
        raise QueueError("name the messages: give queue ids or a filter (--sender, --recipient,"
                         " --domain, --older-than, --state, --held); nothing was changed",
                         temporary=False)
    q = _queue(home)
    now = time.time()
    if not given:
        return [s.id for s in _fresh(q, _selected(q, f, now), f, now)], []
    wanted = list(dict.fromkeys(given))
    read = {qid: listing.one(q, qid) for qid in wanted}
    present = sorted((s for s in read.values() if s is not None),
                     key=lambda s: (s.time, int(s.id)))
    missing = [qid for qid, s in read.items() if s is None]
    if not present:
        raise QueueError(f"no message {missing[0]!r} in the queue (see `mailyard queue list`)",
                         temporary=False)
    kept = select.select(present, f, now,
                         lambda m, st: listing.has_state(q, m, st, cached=False))
    return [s.id for s in kept], missing


def _fresh(q: Queue, chosen: list[listing.Summary], f: select.Filter,
           now: float) -> list[listing.Summary]:
    """The chosen messages read afresh and checked against the filter again (a queue id
    reused since the cached listing is judged by its own envelope)."""
    out = []
    for s in chosen:
        fresh = listing.one(q, s.id)
        if fresh is not None and select.select(
                [fresh], f, now, lambda m, st: listing.has_state(q, m, st, cached=False)):
            out.append(fresh)
    return out


def act(home: Home, action: str, ids: list[str] | None = None,
        f: select.Filter | None = None, reason: str | None = None) -> dict[str, Any]:
    """Apply `action` (ACTIONS) to the messages named by `ids` and/or picked by `f`."""
    if action not in ACTIONS:
        raise QueueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}",
                         temporary=False)
    chosen, missing = select_ids(home, ids, f)
    reason_text = holds.clean_reason(reason) if action == "hold" else ""
    out: dict[str, Any] = {"action": action, "ids": chosen, "count": len(chosen),
                           "missing": missing}
    if not chosen:
        return out | {"via": "none", "done": True}
    q = _queue(home)
    with control.QueueLock(q) as lock:
        if lock.try_acquire():
            changed = _act_direct(q, action, chosen, reason_text)
            return out | {"via": "direct", "done": True, "changed": changed}
    path = control.put_batch(q, action, chosen, reason_text)
    done = control.wait_for_request(path, REQUEST_WAIT_SECONDS + len(chosen) / 1000)
    return out | {"via": "service", "done": done}


def _act_direct(q: Queue, action: str, ids: list[str], reason: str) -> int:
    """The action done here, with the send service's lock held (it is not running). Retry
    changes nothing on disk: every waiting message is due when `send` starts. A bounce
    fails the recipients now; `send` sends the DSN when it starts."""
    changed = 0
    for qid in ids:
        if action == "hold":
            changed += holds.hold(q, qid, reason)
        elif action == "release":
            changed += holds.release(q, qid)
        elif action == "delete":
            qstate.remove_message(q, qid)
            changed += 1
        elif action == "bounce":
            changed += _bounce_direct(q, qid)
    return changed


def _bounce_direct(q: Queue, qid: str) -> bool:
    if q.path("todo", qid).exists():  # split it first; all its recipients fail, so the
        env = qstate.read_todo(q, qid)  # channel each one is put in does not matter
        qstate.split_todo(q, [(qid, env)], lambda _rcpt: False)
    stored = qstate.load_message(q, qid)
    if stored is None:
        return False
    failed = False
    for channel in qstate.CHANNELS:
        for r in stored.recipients[channel]:
            if r.done:
                continue
            qstate.add_bounce_report(q, qid, qstate.BounceReport(
                r.address, DIRECT_BOUNCE_TEXT, DIRECT_BOUNCE_STATUS))
            qstate.mark_done(q, channel, qid, r.offset)
            failed = True
        if stored.recipients[channel]:  # every recipient of the channel is done now
            qstate.finish_channel(q, channel, qid)
    return failed


def send_test(home: Home, to: str, subject: str = "", body: str = "") -> dict[str, Any]:
    """Queue a short test message to `to` (the guide's 7.2.3), from the double bounce
    address (the postmaster), so that a bounce of it reaches the administrator."""
    to = to.strip()
    if "@" not in to or any(ch in to for ch in " \t\r\n<>"):
        raise QueueError(f"{to!r} is not an e-mail address (write user@domain)",
                         temporary=False)
    settings = load_settings(home)
    host = settings.get("bounce.double_host") or settings["server.hostname"]
    sender = f"{settings['bounce.double_to']}@{host}"
    subject = " ".join((subject or "mailyard test message").split())
    now = time.time()
    text = (f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
            f"Date: {email.utils.formatdate(now, localtime=True)}\n"
            f"Message-ID: {email.utils.make_msgid('test', domain=str(host))}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            + (body or "This is a test message sent from the mail queue page.") + "\n")
    q = _queue(home)
    env = Envelope(sender=sender, recipients=[to], uid=os.getuid(), protocol="local",
                   extra={"test": True})
    with q.open_message() as w:
        w.write(text.encode("utf-8"))
        qid = w.commit(env)
    return {"id": qid, "to": to, "from": sender, "subject": subject}


def reset(home: Home) -> dict[str, Any]:
    """Move the queue aside as queue.bad (or queue.bad.N) and make a fresh one (guide 7.3.1).

    The caller stops smtp, submission and send first and starts them again after; the old
    queue is kept whole for inspection or recovery.
    """
    q = _queue(home)
    with control.QueueLock(q) as lock:
        if not lock.try_acquire():
            raise QueueError("the send service is running; stop the send and SMTP services "
                             "before resetting the queue", temporary=False)
        messages = len(set(q.ids("todo")) | set(q.ids("info")) | set(q.ids("mess")))
        target = _free_name(home.queue_dir.with_name(home.queue_dir.name + ".bad"))
        os.rename(home.queue_dir, target)
    Queue(home.queue_dir)
    chown_path(home.queue_dir)
    return {"moved_to": str(target), "messages": messages}


def _free_name(base: Path) -> Path:
    if not base.exists():
        return base
    n = 1
    while base.with_name(f"{base.name}.{n}").exists():
        n += 1
    return base.with_name(f"{base.name}.{n}")
