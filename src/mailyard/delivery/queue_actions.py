"""The administrator's actions on queued messages, as the running send service carries them
out: hold, release, retry now, bounce now (delete is admin_requests.delete).

The administration (queue/admin.py) leaves a batch request in the queue's lock/ directory;
the scheduler's request handling (admin_requests.py) calls `carry_out`, which changes the
scheduler's state and the queue files and writes the send log's lines (parsed by
logtools/parser.py):

    hold msg N: REASON
    release msg N
    retry msg N
    warning: msg N bounced by the administrator

A held message stays in the queue with its recipients to do; the scheduler never starts a
delivery of it (a delivery already on its way finishes). Its retry clock does not run while
it is held, since no attempt is made, and the queue lifetime is still counted from its
arrival: released after the lifetime, it gets one last attempt, as any message at the end of
its lifetime does, and a temporary failure then bounces it.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import TYPE_CHECKING

from ..queue import attempts, holds
from ..queue.state import CHANNELS
from . import sendlog
from .result import FAILURE, Result

if TYPE_CHECKING:
    from .scheduler import Message, Scheduler

# The RFC 3463 status of a recipient the administrator bounced: 5.0.0, "other or undefined",
# as no more specific code says "returned by the administrator".
ADMIN_BOUNCE_STATUS = "5.0.0"


def hold_msg(qid: str, reason: str) -> str:
    return f"hold msg {qid}: {holds.clean_reason(reason)}"


def release_msg(qid: str) -> str:
    return f"release msg {qid}"


def retry_msg(qid: str) -> str:
    return f"retry msg {qid}"


def bounced_msg(qid: str) -> str:
    return sendlog.warning(f"msg {qid} bounced by the administrator")


def bounce_text(hostname: str) -> str:
    return (f"This message was returned to you by the administrator of {hostname}; "
            "it was not delivered to this recipient.")


async def carry_out(s: Scheduler, action: str, ids: list[str], reason: str) -> None:
    """Apply one batch request (hold, release, retry, bounce) to the messages `ids`."""
    if action == "hold":
        for qid in ids:
            await _hold(s, qid, reason)
        return
    due: set[str] = set()
    for qid in ids:
        m = s.messages.get(qid)
        if action == "release":
            released = await asyncio.to_thread(holds.release, s.queue, qid)
            s.held.discard(qid)
            if m is not None:
                m.held = False
            if released:
                s.log.write(release_msg(qid))
                due.add(qid)
        elif action == "retry":
            if (m is not None and not m.held and not m.deleted) or \
                    (m is None and qid not in s.held and _waiting(s, qid)):
                s.log.write(retry_msg(qid))
                due.add(qid)
        elif action == "bounce":
            if m is not None:
                await bounce(s, m)
            elif _waiting(s, qid):  # not yet split: bounced as soon as it is
                s.bounce_on_adopt.add(qid)
    make_due(s, due)


def _waiting(s: Scheduler, qid: str) -> bool:
    """Whether `qid` is committed but not yet taken in by the scheduler (still in todo/)."""
    return qid.isdigit() and s.queue.path("todo", qid).exists()


async def _hold(s: Scheduler, qid: str, reason: str) -> None:
    m = s.messages.get(qid)
    if (m is None and not _waiting(s, qid)) or (m is not None and m.deleted):
        return  # gone meanwhile, or being removed (a hold file would outlive it)
    try:
        made = await asyncio.to_thread(holds.hold, s.queue, qid, reason)
    except OSError as err:
        s.log.write(sendlog.alert(f"unable to hold msg {qid}: {err}"))
        return
    s.held.add(qid)
    if m is not None:
        m.held = True
    if made:
        s.log.write(hold_msg(qid, reason))


def make_due(s: Scheduler, qids: set[str]) -> None:
    """The messages `qids` are due now: their waiting recipients go at the next dispatch."""
    if not qids:
        return
    now = time.time()
    for channel in CHANNELS:
        s.heap[channel] = [(min(w, now) if q in qids else w, n, q) for w, n, q in s.heap[channel]]
        heapq.heapify(s.heap[channel])
    for qid in qids:
        m = s.messages.get(qid)
        if m is None or m.deleted:
            continue
        for channel in CHANNELS:
            m.next_try[channel] = now
            if m.pending[channel]:
                s._push(channel, now, qid)
    s.wake.set()


async def bounce(s: Scheduler, m: Message) -> None:
    """Fail every recipient of `m` still waiting (not those on their way) with a report, so
    that the message's bounce (an RFC 3464 DSN to its sender) goes out as for any failure."""
    if m.deleted:
        return
    failure = Result(FAILURE, bounce_text(str(s.settings["server.hostname"])),
                     status=ADMIN_BOUNCE_STATUS)
    s.log.write(bounced_msg(m.qid))
    for channel in CHANNELS:
        waiting = sorted(set(m.pending[channel]) | set(m.deferred[channel]))
        m.pending[channel].clear()
        m.deferred[channel] = []
        for index in waiting:
            if not m.recipients[channel][index].done:
                await s._record(m, channel, index, failure)
    for channel in CHANNELS:
        s._after(m, channel)
        if m.deleted or not m.busy():
            break


def adopted_for_bounce(s: Scheduler, m: Message) -> None:
    """A message whose bounce was asked for before it was split: kept from delivery and
    bounced now."""
    s.bounce_on_adopt.discard(m.qid)
    m.held = True  # in memory only: no dispatch before the bounce below has run
    s._spawn(bounce(s, m))


def note_deferral(s: Scheduler, m: Message, address: str, reply: str,
                  next_try: float) -> None:
    """Count a deferred attempt of `address` and keep its reply in attempts/N (see
    queue/attempts.py: a small file replaced without fsync, written here on the loop)."""
    attempts.note(m.attempts, address, reply, time.time(), next_try)
    try:
        attempts.write(s.queue, m.qid, m.attempts)
    except OSError as err:
        s.log.write(sendlog.warning(f"cannot record the attempts of msg {m.qid}: {err}"))
