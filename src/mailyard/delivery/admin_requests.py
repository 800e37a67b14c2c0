"""The administrator's requests to the running send service: batches, flush, delete, purge."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..queue import control as qcontrol
from ..queue import state as qstate
from ..queue.state import CHANNELS
from . import queue_actions, sendlog

if TYPE_CHECKING:
    from .scheduler import Scheduler


async def carry_out_requests(s: Scheduler) -> bool:
    """Take the requests the administration left in the queue (queue/control.py) and carry
    each out on the scheduler `s`, on its loop; True when one of them asks for a flush, which
    the scheduler does itself (every message due now)."""
    flush = False
    for request in await asyncio.to_thread(qcontrol.take_requests, s.queue):
        if request.arg == qcontrol.BATCH_ARG:  # hold, release, retry, bounce, delete
            ids, reason = await asyncio.to_thread(qcontrol.read_batch, request)
            if request.action == "delete":
                for qid in ids:
                    await delete(s, qid)
            else:
                await queue_actions.carry_out(s, request.action, ids, reason)
        elif request.action == "flush":
            flush = True
        elif request.action == "delete":
            await delete(s, request.arg)
        elif request.action == "purge":
            await purge(s, request.arg)
        request.path.unlink(missing_ok=True)
    return flush


async def delete(s: Scheduler, qid: str) -> None:
    """Remove message `qid` from the scheduler and the queue; its deliveries under way
    finish but record nothing."""
    m = s.messages.get(qid)
    if m is not None:
        m.deleted = True
        s.messages.pop(qid, None)
    if qid.isdigit():
        await asyncio.to_thread(qstate.remove_message, s.queue, qid)
        s.log.write(sendlog.warning(f"msg {qid} deleted by the administrator"))
        s.log.write(sendlog.end_msg(qid))


async def purge(s: Scheduler, which: str) -> None:
    """Delete the messages of todo/ ("todo"), or every message ("all"), or end the local or
    remote deliveries of every message (a channel's name): a message with nothing left to do
    then completes (its bounce goes out for the failures already recorded)."""
    if which in ("todo", "all"):
        for qid in s.queue.ids("todo"):
            await delete(s, qid)
    if which == "all":
        for qid in list(s.messages):
            await delete(s, qid)
        return
    if which in CHANNELS:
        for m in list(s.messages.values()):
            if m.deleted or not any(not r.done for r in m.recipients[which]):
                continue
            for rcpt in m.recipients[which]:
                rcpt.done = True
            m.purged.add(which)
            m.pending[which].clear()
            m.deferred[which].clear()
            await asyncio.to_thread(qstate.finish_channel, s.queue, which, m.qid)
            s.log.write(sendlog.warning(
                f"{which} deliveries of msg {m.qid} purged by the administrator"))
            if not m.busy():
                s._spawn(s._complete(m))
