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
from . import control
from . import state as qstate
from .envelope import Envelope
from .errors import QueueError
from .layout import Queue

# How long a change waits for the running send service to carry it out.
REQUEST_WAIT_SECONDS = 15.0
# `show` returns at most this much of the message text (a queue can hold 2 GB messages).
MAX_SHOW_BYTES = 64 * 1024
PURGE_CHOICES = (*qstate.CHANNELS, "todo", "all")
LIST_CHOICES = ("all", *qstate.CHANNELS, "todo")


@dataclass
class RecipientState:
    address: str
    channel: str  # "local", "remote", or "todo" before the message is split
    done: bool


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MessageDetail(QueuedMessage):
    client_ip: str | None = None
    helo: str | None = None
    auth_user: str | None = None
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
    """Todo, Local and Remote message counts (the guide's Quick Stats), and all messages."""
    q = _queue(home)
    counts = q.counts()
    counts["messages"] = len(_all_ids(q))
    return counts


def _describe(q: Queue, qid: str, now: float) -> tuple[QueuedMessage, Envelope] | None:
    if q.path("todo", qid).exists():
        try:
            env = qstate.read_todo(q, qid)
        except (QueueError, FileNotFoundError):
            return None
        rcpts = [RecipientState(r, "todo", False) for r in env.recipients]
        status = "todo"
    else:
        stored = qstate.load_message(q, qid)
        if stored is None:
            return None
        env = stored.envelope
        rcpts = [RecipientState(r.address, channel, r.done)
                 for channel in qstate.CHANNELS for r in stored.recipients[channel]]
        busy = [c for c in qstate.CHANNELS if any(not r.done for r in stored.recipients[c])]
        status = "+".join(busy) if busy else ("bounce" if stored.bounce_pending else "done")
    item = QueuedMessage(
        id=qid, date=email.utils.formatdate(env.time, localtime=True), time=env.time,
        age_seconds=max(0, int(now - env.time)), size=env.size, sender=env.sender,
        recipients=rcpts, status=status)
    return item, env


def list_messages(home: Home, which: str = "all", sender: str | None = None,
                  recipient: str | None = None) -> list[QueuedMessage]:
    """Messages in the queue, oldest first; `which` picks all, local, remote or todo ones;
    `sender`/`recipient` keep those whose address contains the text (case-insensitive)."""
    if which not in LIST_CHOICES:
        raise QueueError(f"unknown queue {which!r}; choose one of {', '.join(LIST_CHOICES)}",
                         temporary=False)
    q = _queue(home)
    now = time.time()
    out = []
    for qid in _all_ids(q):
        found = _describe(q, qid, now)
        if found is None:
            continue
        item, _ = found
        if which != "all" and which not in item.status.split("+"):
            continue
        if sender is not None and sender.lower() not in item.sender.lower():
            continue
        if recipient is not None and not any(recipient.lower() in r.address.lower()
                                             for r in item.recipients):
            continue
        out.append(item)
    out.sort(key=lambda m: m.time)
    return out


def show(home: Home, qid: str) -> MessageDetail:
    """Everything about one message: envelope, recipients' states, failures, its text."""
    q = _queue(home)
    qid = str(qid).strip()
    found = _describe(q, qid, time.time()) if qid.isdigit() else None
    if found is None:
        raise QueueError(f"no message {qid!r} in the queue (see `mailyard queue list`)",
                         temporary=False)
    item, env = found
    try:
        with open(q.path("mess", qid), "rb") as f:
            data = f.read(MAX_SHOW_BYTES + 1)
    except FileNotFoundError:
        data = b""
    failures = [asdict(r) for r in qstate.read_bounce_reports(q, qid)]
    return MessageDetail(
        **asdict(item) | {"recipients": item.recipients},
        client_ip=env.client_ip, helo=env.helo, auth_user=env.auth_user,
        protocol=env.protocol, uid=env.uid, qp=env.qp, failures=failures,
        message=data[:MAX_SHOW_BYTES].decode("utf-8", "replace"),
        truncated=len(data) > MAX_SHOW_BYTES)


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
