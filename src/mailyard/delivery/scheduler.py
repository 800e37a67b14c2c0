"""The send service's core: pick up committed messages, run deliveries, retry, bounce, log.

One asyncio loop owns all in-memory state; file work that may block (fsync, the store) runs
in threads, which return what they did for the loop to apply and log (no thread changes the
loop's state). Per message and channel (local, remote) the recipients still to do are either
pending (due, waiting for a free slot), in flight, or deferred (waiting for the next retry
time of that message and channel, qmail's schedule in retry.py). How each state on disk
comes back after a crash is in docs/queue.md. What a failure becomes (a deferral at the end
of the lifetime, a bounce, a double bounce, nothing) is decided in bounce.py (the
scheduler queues what it says); the administrator's requests are carried out in
admin_requests.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..durable import fsync_dir
from ..home import Home
from ..mailauth.forwarding import Forwarder
from ..mailauth.mtasts import PolicyCache
from ..mailauth.outbound import Signer
from ..queue import Envelope, Queue, QueueError, TornMessage
from ..queue import attempts as qattempts
from ..queue import holds as qholds
from ..queue import state as qstate
from ..queue.state import CHANNELS, BounceReport, Recipient
from ..store.settings_store import load_settings
from ..sync_process import LoopSync
from . import admin_requests, queue_actions, sendlog
from .batch import Batcher, each
from .bounce import BounceDecision, BounceKind, bounce_sender, build_bounce, decide_bounce, settle
from .local import LocalContext, deliver_local, mailbox_scanner
from .lookup import Recipients
from .remote import RemoteClient, RemoteSettings, next_hop
from .result import FAILURE, SUCCESS, Result, deferral
from .retry import next_retry

# Committed messages split per pass of the loop: bounds the time between two dispatches when
# thousands arrive at once (qmail-send reads todo in a similar trickle).
TODO_BATCH = 50
# With nothing due, the loop still wakes this often to look for stray work (a lost trigger).
IDLE_WAKE_SECONDS = 60.0
# How often leftovers of dead writers are cleaned (qmail-clean runs hourly too).
CLEAN_INTERVAL_SECONDS = 3600.0
# On SIGTERM, deliveries in flight get this long to finish before they are abandoned; an
# abandoned delivery is simply retried at the next start (supervisord waits 10 s by default).
SHUTDOWN_GRACE_SECONDS = 8.0
# A message up to this size is read (for a local delivery) and checked against its envelope
# (when split) on the event loop, in a few tens of microseconds from the page cache; a larger
# one in a thread, so that one big message does not hold up the loop (Postfix's default
# message_size_limit is 10 MB; 256 KiB reads in well under a millisecond).
READ_ON_LOOP_MAX = 256 * 1024
# Seconds before a bounce that could not be queued (a full disk) is tried again.
BOUNCE_RETRY_SECONDS = 60.0
# Seconds before a delivery whose outcome could not be written (a full disk) is tried again;
# as for a bounce that could not be queued.
RECORD_RETRY_SECONDS = BOUNCE_RETRY_SECONDS
# Recipients of one message sent in one SMTP transaction at most: Postfix's
# smtp_destination_recipient_limit is 50 as well (RFC 5321 4.5.3.1.8 asks servers to take 100).
RCPTS_PER_TRANSACTION = 50
# This node's SMTP listeners (Home.port names): remote delivery never connects to them.
SMTP_LISTENERS: tuple[str, ...] = ("smtp", "submission", "smtps")
# Seconds before splitting new messages is tried again after the store or the disk failed.
TODO_RETRY_SECONDS = 5.0


# DKIM signatures kept for messages whose remote deliveries are under way: one signature per
# message however many recipients it has (signing reads the whole message and costs an RSA
# operation); a message retried after this many others is signed afresh.
SIGNATURES_KEPT = 256
# Where the MTA-STS policies seen are kept (below HOME/var), so a restart keeps them.
MTA_STS_DIR = "mta-sts"

@dataclass
class Message:
    qid: str
    envelope: Envelope
    recipients: dict[str, list[Recipient]]
    bounce_pending: bool
    pending: dict[str, deque[int]] = field(default_factory=dict)
    deferred: dict[str, list[int]] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    next_try: dict[str, float] = field(default_factory=dict)
    deleted: bool = False
    purged: set[str] = field(default_factory=set)  # channels an administrator purged
    held: bool = False  # held (queue/holds.py): no delivery starts
    attempts: dict[str, dict[str, Any]] = field(default_factory=dict)  # queue/attempts.py

    @property
    def birth(self) -> float:
        return self.envelope.time

    def busy(self) -> bool:
        return any(self.pending[c] or self.deferred[c] or self.in_flight[c] for c in CHANNELS)


class Scheduler:
    def __init__(self, home: Home, log: sendlog.SendLog) -> None:
        self.home = home
        self.queue = Queue(home.queue_dir)
        self.log = log
        self.settings: dict[str, Any] = load_settings(home)
        self.tasks: set[asyncio.Task[None]] = set()
        self.recipients = Recipients(home)  # the store's in-process view, for every lookup
        # The syncfs rounds of the splits, Maildir writes and done marks, made by a child
        # process while the loop goes on (sync_process.py); where syncfs rounds exist, their
        # file work is done on the loop, elsewhere one thread job per batch (batch.py).
        self.sync = LoopSync()
        self._apply_settings()
        self.messages: dict[str, Message] = {}
        self.heap: dict[str, list[tuple[float, int, str]]] = {c: [] for c in CHANNELS}
        self.ready: dict[str, deque[str]] = {c: deque() for c in CHANNELS}
        self.active: dict[str, int] = {c: 0 for c in CHANNELS}
        self.deliveries = itertools.count(1)
        self._seq = itertools.count()
        self.wake = asyncio.Event()
        self.stopping = False
        self._flush = False
        self._reload = False
        self._look = True  # todo/ and requests to be listed at the next pass
        self._splitting = False  # a split of todo/ is under way (_split)
        self._last_clean = 0.0
        self.dest_active: dict[str, int] = {}  # remote deliveries in flight per next hop
        self._signatures: dict[str, tuple[bytes, str]] = {}  # qid -> DKIM fields, domain
        self._dest_blocked = False  # ready remote work waits only for busy destinations
        self.held: set[str] = set()  # queue ids held (queue/holds.py), read at start
        self.bounce_on_adopt: set[str] = set()  # bounced by the administrator while in todo/
        self._marks: Batcher[tuple[str, str, int], None] = \
            Batcher.steps(partial(qstate.mark_done_many_steps, self.queue), self.sync) \
            if qstate.SYNC_ROUNDS else Batcher(partial(qstate.mark_done_many, self.queue))
        self._reads: Batcher[str, bytes] = Batcher(each(_read_file))  # (large messages)

    # ---- settings -----------------------------------------------------------------------------
    def _apply_settings(self) -> None:
        s = self.settings
        self.home.use_settings(s)  # the mail root (mail.root) deliveries and training use
        self.limits = {"local": int(s["send.local_concurrency"]),
                       "remote": int(s["send.max_connections"])}
        self.lifetime = float(s["send.queue_lifetime"])
        self.dest_limit = int(s["send.destination_concurrency"])
        ports = [self.home.port(name, s) for name in SMTP_LISTENERS]
        cfg = RemoteSettings.from_settings(s, ports)
        old = getattr(self, "remote", None)
        sts = PolicyCache(self.home.var_dir / MTA_STS_DIR, cfg.resolver, cfg.ca_file) \
            if s["send.mta_sts"] else None
        self.remote = RemoteClient(cfg, sts)
        if old is not None:  # sessions opened under the old settings are not reused
            self._spawn(old.close())
        self.local_ctx = LocalContext(self.home, s, self.queue, mailbox_scanner(),
                                      Forwarder(self.home, s), self.recipients,
                                      sync=self.sync)
        self.signer = Signer(self.home, bool(s["dkim.signing"]))

    def request_reload(self) -> None:
        self._reload = True
        self.wake.set()

    def request_flush(self) -> None:
        self._flush = True
        self.wake.set()

    def notify(self) -> None:
        """Something was put in the queue (the trigger fired): at the next pass, look at
        todo/ and at the administration requests. Between triggers neither directory is
        listed, except after an idle wake (a lost trigger)."""
        self._look = True
        self.wake.set()

    def request_stop(self) -> None:
        self.stopping = True
        self.wake.set()

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        await self._clean()
        self.held = await asyncio.to_thread(qholds.held_ids, self.queue)
        for qid in sorted(self.queue.ids("info"), key=int):
            if not self.queue.path("todo", qid).exists():
                await self._load(qid)
        self._status()
        while not self.stopping:
            self.wake.clear()
            if self._reload:
                self._reload = False
                try:
                    self.settings = await asyncio.to_thread(load_settings, self.home)
                except Exception as err:  # keep going with the settings we have
                    self.log.write(sendlog.warning(f"cannot reload settings: {err}"))
                else:
                    self._apply_settings()
                    self._status()
            look, self._look = self._look, False  # a trigger from now on is seen next pass
            if look and self._splitting:  # todo/ and the requests after the split under way
                self._look, look = True, False
            if look and await admin_requests.carry_out_requests(self):
                self._flush = True
            if self._flush:
                self._flush = False
                self._make_all_due()
            if look:
                self._splitting = True
                self._spawn(self._split())
            self._dispatch()
            if time.time() - self._last_clean > CLEAN_INTERVAL_SECONDS:
                await self._clean()
            try:
                await asyncio.wait_for(self.wake.wait(), self._idle_seconds())
            except TimeoutError:
                self._look = True  # nothing woke us: look for stray work
        await self._shutdown()

    async def _pause(self, seconds: float) -> None:
        """Wait, but let deliveries already due go on meanwhile, and stop promptly."""
        self._dispatch()
        try:
            await asyncio.wait_for(self._stopped(), seconds)
        except TimeoutError:
            pass

    async def _stopped(self) -> None:
        while not self.stopping:
            self.wake.clear()
            await self.wake.wait()
            self._dispatch()

    def _idle_seconds(self) -> float:
        wait = IDLE_WAKE_SECONDS
        now = time.time()
        for channel in CHANNELS:
            if self.heap[channel]:
                wait = min(wait, self.heap[channel][0][0] - now)
            if self.ready[channel] and self.active[channel] < self.limits[channel] \
                    and not (channel == "remote" and self._dest_blocked):
                wait = 0  # (work held by a busy destination waits for a delivery to end)
        return max(wait, 0.0)

    async def _shutdown(self) -> None:
        if self.tasks:
            _, still = await asyncio.wait(set(self.tasks), timeout=SHUTDOWN_GRACE_SECONDS)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=2)
        await self.remote.close()
        self.recipients.close()
        self.sync.close()
        self.log.write("status: exiting")

    async def _clean(self) -> None:
        self._last_clean = time.time()
        for what in await asyncio.to_thread(qstate.clean_orphans, self.queue):
            self.log.write(sendlog.warning(f"removed leftover {what}"))

    def _status(self) -> None:
        self.log.write(sendlog.status(self.active["local"], self.limits["local"],
                                      self.active["remote"], self.limits["remote"]))

    # ---- bringing messages in ------------------------------------------------------------------
    async def _load(self, qid: str) -> None:
        try:
            stored = await asyncio.to_thread(qstate.load_message, self.queue, qid)
        except OSError as err:  # e.g. a file an administrator made as root: leave it be
            self.log.write(sendlog.alert(f"cannot read msg {qid}: {err}; left in the queue"))
            return
        if stored is None or not self.queue.path("mess", qid).exists():
            self.log.write(sendlog.warning(f"msg {qid} is incomplete in the queue; removed"))
            await asyncio.to_thread(qstate.remove_message, self.queue, qid)
            return
        self._adopt(stored)
        m = self.messages.get(qid)
        if m is not None:  # attempt counts go on across restarts
            m.attempts = await asyncio.to_thread(qattempts.read, self.queue, qid)

    def _adopt(self, stored: qstate.StoredMessage) -> None:
        m = Message(stored.qid, stored.envelope, stored.recipients, stored.bounce_pending)
        # (an id held once may be a new message now: the hold file decides, rarely looked at)
        m.held = m.qid in self.held and qholds.is_held(self.queue, m.qid)
        if not m.held:
            self.held.discard(m.qid)
        now = time.time()
        for channel in CHANNELS:
            todo = [i for i, r in enumerate(m.recipients[channel]) if not r.done]
            m.pending[channel] = deque(todo)
            m.deferred[channel] = []
            m.in_flight[channel] = 0
            m.next_try[channel] = now
            if todo:
                self._push(channel, now, m.qid)
        self.messages[m.qid] = m
        if m.qid in self.bounce_on_adopt:
            queue_actions.adopted_for_bounce(self, m)
        if not m.busy():
            self._spawn(self._complete(m))

    async def _split(self) -> None:
        """_take_todo beside the loop: deliveries go on being dispatched while a split waits
        for its sync rounds."""
        try:
            more = await self._take_todo()
        finally:
            self._splitting = False
        if more:
            self._look = True
        self.wake.set()

    async def _read_todos(self, batch: list[str]) -> list[tuple[str, Envelope | Exception]]:
        """qstate.read_todos on the loop (small files, no thread hop); the data of a large
        message is checked in a thread (READ_ON_LOOP_MAX)."""
        out = qstate.read_todos(self.queue, batch, check_max=READ_ON_LOOP_MAX)
        for i, (qid, env) in enumerate(out):
            if isinstance(env, Envelope) and env.size > READ_ON_LOOP_MAX:
                try:
                    await asyncio.to_thread(qstate.check_data, self.queue, qid, env)
                except (QueueError, OSError) as err:
                    out[i] = (qid, err)
        return out

    async def _take_todo(self) -> bool:
        """Split up to TODO_BATCH committed messages; True when more are waiting."""
        ids = sorted(self.queue.ids("todo"), key=int)
        if not ids:
            return False
        batch = ids[:TODO_BATCH]
        items: list[tuple[str, Envelope]] = []
        batch = [qid for qid in batch if qid not in self.messages]  # (cannot happen; be safe)
        for qid, env in await self._read_todos(batch):
            if isinstance(env, TornMessage):  # a crash tore it before its 250: never sent
                self.log.write(sendlog.warning(f"{str(env).removeprefix('queue: ')}; removed"))
                qstate.remove_message(self.queue, qid)
                continue
            if isinstance(env, Exception):
                self.log.write(sendlog.warning(f"trouble reading todo/{qid}: {env}"))
                continue
            default_domain = str(self.settings["server.default_domain"])
            env.recipients = [r if "@" in r else f"{r}@{default_domain}"
                              for r in env.recipients]
            items.append((qid, env))
        if not items:
            return len(ids) > len(batch)
        try:
            domains = await self._local_domains()
        except Exception as err:  # the store is unreachable: leave todo alone, retry soon
            self.log.write(sendlog.warning(f"cannot read local domains from the store: {err}"))
            await self._pause(TODO_RETRY_SECONDS)
            return True

        def is_local(rcpt: str) -> bool:
            return rcpt.rpartition("@")[2].lower().rstrip(".") in domains

        try:
            if qstate.SYNC_ROUNDS:
                stored = await self.sync.run(qstate.split_todo_steps(self.queue, items,
                                                                     is_local))
            else:
                stored = await asyncio.to_thread(qstate.split_todo, self.queue, items,
                                                 is_local)
        except OSError as err:
            self.log.write(sendlog.alert(f"unable to split todo messages: {err}; will retry"))
            await self._pause(TODO_RETRY_SECONDS)
            return True
        for msg in stored:
            env = msg.envelope
            self.log.write(sendlog.new_msg(msg.qid))
            self.log.write(sendlog.info_msg(msg.qid, env.size, env.sender, env.qp,
                                            env.uid if env.uid is not None else 0))
            self._adopt(msg)
        return len(ids) > len(batch)

    async def _local_domains(self) -> set[str]:
        """The domains delivered here: every domain of the store, plus the node's hostname
        and default domain, which are local even without a row (so that mail for them never
        leaves the node and comes back: a loop). From the view: no query while it is current."""
        own = (self.settings["server.hostname"], self.settings["server.default_domain"])
        return await self.recipients.domains() | {str(n).lower() for n in own if n}

    # ---- scheduling -----------------------------------------------------------------------------
    def _push(self, channel: str, when: float, qid: str) -> None:
        heapq.heappush(self.heap[channel], (when, next(self._seq), qid))

    def _make_all_due(self) -> None:
        now = time.time()
        for channel in CHANNELS:
            entries = self.heap[channel]
            self.heap[channel] = [(min(w, now), s, q) for w, s, q in entries]
            heapq.heapify(self.heap[channel])
        for m in self.messages.values():
            for channel in CHANNELS:
                m.next_try[channel] = min(m.next_try[channel], now)

    def _dispatch(self) -> None:
        if self.stopping:
            return
        now = time.time()
        for channel in CHANNELS:
            heap = self.heap[channel]
            while heap and heap[0][0] <= now:
                _, _, qid = heapq.heappop(heap)
                self.ready[channel].append(qid)
            ready = self.ready[channel]
            if channel == "remote":
                self._dispatch_remote(ready)
                continue
            while ready and self.active[channel] < self.limits[channel]:
                m = self.messages.get(ready[0])
                if m is None or m.deleted or m.held or not m.pending[channel]:
                    ready.popleft()
                    continue
                index = m.pending[channel].popleft()
                if not m.pending[channel]:
                    ready.popleft()
                self._start(m, channel, [index], None)

    def _dispatch_remote(self, ready: deque[str]) -> None:
        """As for local, but a recipient whose destination already has its limit of
        deliveries in flight waits (in order) while others go ahead."""
        self._dest_blocked = False
        waiting: deque[str] = deque()
        while ready and self.active["remote"] < self.limits["remote"]:
            qid = ready.popleft()
            m = self.messages.get(qid)
            if m is None or m.deleted or m.held or not m.pending["remote"]:
                continue
            pending = m.pending["remote"]
            held: list[int] = []
            while pending and self.active["remote"] < self.limits["remote"]:
                index = pending.popleft()
                hop = self._hop(m, index)
                if self.dest_active.get(hop, 0) >= self.dest_limit:
                    held.append(index)
                    continue
                group = [index]
                for other in list(pending):  # the message's other recipients of this hop
                    if len(group) >= RCPTS_PER_TRANSACTION:
                        break
                    if self._hop(m, other) == hop:
                        group.append(other)
                        pending.remove(other)
                self._start(m, "remote", group, hop)
            if held:
                pending.extendleft(reversed(held))
                self._dest_blocked = True
            if pending:
                waiting.append(qid)
        ready.extendleft(reversed(waiting))

    def _hop(self, m: Message, index: int) -> str:
        return next_hop(self.remote.cfg.routes, m.recipients["remote"][index].address)

    def _start(self, m: Message, channel: str, indices: list[int], hop: str | None) -> None:
        m.in_flight[channel] += len(indices)
        self.active[channel] += 1
        if hop is not None:
            self.dest_active[hop] = self.dest_active.get(hop, 0) + 1
        self._spawn(self._deliver(m, channel, indices, hop))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.write(sendlog.alert(f"internal error: {task.exception()!r}"))
        self.wake.set()

    # ---- one delivery ---------------------------------------------------------------------------
    async def _deliver(self, m: Message, channel: str, indices: list[int],
                       hop: str | None) -> None:
        """One delivery attempt: one local recipient, or remote recipients of one next hop
        in one SMTP transaction. Each recipient has its own delivery number and result line,
        as qmail-send logs them."""
        numbers = [next(self.deliveries) for _ in indices]
        recipients = [m.recipients[channel][i].address for i in indices]
        for number, recipient in zip(numbers, recipients, strict=True):
            self.log.write(sendlog.starting_delivery(number, m.qid, channel, recipient))
        self._status()
        started = time.time()
        try:
            results = await self._attempt(m, channel, recipients)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            results = [deferral(f"Internal error during delivery: {type(err).__name__}: "
                                f"{err}. (#4.3.0)")] * len(indices)
        finally:
            self._release(channel, hop)
        try:
            for number, index, attempted in zip(numbers, indices, results, strict=True):
                result = settle(attempted, m.birth, started, self.lifetime)
                self.log.write(sendlog.delivery_result(number, result.kind, result.text))
                await self._record(m, channel, index, result)
        finally:
            m.in_flight[channel] -= len(indices)  # (kept until recorded: see _after)
            self._status()
        self._after(m, channel)

    def _release(self, channel: str, hop: str | None) -> None:
        """Free the slot of an attempt that is over, before its outcome is written (as
        qmail-send frees a slot at the result, then marks it done), so the next delivery
        starts while this one's done mark waits for its sync round."""
        self.active[channel] -= 1
        if hop is not None:
            left = self.dest_active.get(hop, 1) - 1
            if left > 0:
                self.dest_active[hop] = left
            else:
                self.dest_active.pop(hop, None)
        self.wake.set()

    async def _attempt(self, m: Message, channel: str, recipients: list[str]) -> list[Result]:
        if channel == "local":
            path = self.queue.file("mess", m.qid)
            if m.envelope.size <= READ_ON_LOOP_MAX:
                data = _read_file(path)
            else:
                data = await self._reads.submit(path)
            return [await deliver_local(self.local_ctx, m.envelope, recipients[0], data)]
        mess = self.queue.path("mess", m.qid)
        signature, signed_for = await self._signature(m, mess)
        results = await self.remote.deliver_many(m.envelope.sender, recipients, mess,
                                                 m.envelope.size, signature)
        if signature:
            results = [replace(r, text=f"{r.text}\nDKIM: signed for {signed_for}")
                       if r.kind == SUCCESS else r for r in results]
        return results

    async def _signature(self, m: Message, mess: Path) -> tuple[bytes, str]:
        """The DKIM-Signature fields for a message leaving now (b"" when it is not signed),
        made once per message and kept while its remote deliveries run."""
        cached = self._signatures.get(m.qid)
        if cached is None:
            def sign() -> tuple[bytes, str]:
                with open(mess, "rb") as f:
                    return self.signer.header_for(m.envelope, f.read())
            try:
                cached = await asyncio.to_thread(sign)
            except OSError as err:  # unreadable now: deliver unsigned rather than not at all
                cached = (b"", f"cannot read the message: {err}")
            self._signatures[m.qid] = cached
            while len(self._signatures) > SIGNATURES_KEPT:
                self._signatures.pop(next(iter(self._signatures)))
        return cached

    async def _record(self, m: Message, channel: str, index: int, result: Result) -> None:
        if m.deleted or channel in m.purged:
            return
        rcpt = m.recipients[channel][index]
        if result.kind == SUCCESS or result.kind == FAILURE:
            try:
                if result.kind == FAILURE:
                    report = BounceReport(rcpt.address, result.text, result.enhanced_status(),
                                          result.remote_mta, result.diagnostic)
                    await asyncio.to_thread(qstate.add_bounce_report, self.queue, m.qid,
                                            report)
                    m.bounce_pending = True
                try:
                    await self._marks.submit((channel, m.qid, rcpt.offset))
                except FileNotFoundError:
                    pass  # the administrator purged this channel meanwhile
            except OSError as err:
                self._keep_to_do(m, channel, index, err)
                return
            rcpt.done = True
        else:
            m.deferred[channel].append(index)
            m.next_try[channel] = next_retry(m.birth, time.time(), channel, self.lifetime)
            queue_actions.note_deferral(self, m, rcpt.address, result.diagnostic or result.text,
                                        m.next_try[channel])

    def _keep_to_do(self, m: Message, channel: str, index: int, err: OSError) -> None:
        """The outcome could not be made durable (a full disk, an I/O error): the recipient
        stays to do and is tried again, so neither its bounce nor the message is lost."""
        rcpt = m.recipients[channel][index]
        self.log.write(sendlog.alert(
            f"unable to record the delivery of msg {m.qid} to {rcpt.address}: {err}; "
            "will try again"))
        m.deferred[channel].append(index)
        m.next_try[channel] = min(time.time() + RECORD_RETRY_SECONDS,
                                  next_retry(m.birth, time.time(), channel, self.lifetime))

    def _after(self, m: Message, channel: str) -> None:
        if m.deleted or m.in_flight[channel] or m.pending[channel]:
            return
        if m.deferred[channel] and channel not in m.purged:
            m.pending[channel] = deque(sorted(m.deferred[channel]))
            m.deferred[channel] = []
            self._push(channel, m.next_try[channel], m.qid)
            return
        if not m.busy():
            self._spawn(self._complete(m))  # removes every file of the message at once
        elif all(r.done for r in m.recipients[channel]) and m.recipients[channel]:
            # The other channel still works: drop this one's file now
            try:
                qstate.finish_channel(self.queue, channel, m.qid)
            except OSError as err:  # it comes back all done at worst
                self.log.write(sendlog.warning(f"unable to remove {channel}/{m.qid}: {err}"))

    # ---- the end of a message -------------------------------------------------------------------
    async def _complete(self, m: Message) -> None:
        if m.deleted or self.messages.get(m.qid) is not m:
            return
        m.deleted = True  # nothing else may touch it from here
        if m.bounce_pending:
            try:
                await self._bounce(m)
            except (OSError, QueueError) as err:
                self.log.write(sendlog.warning(f"unable to send bounce for msg {m.qid}: {err};"
                                               " will try again"))
                m.deleted = False
                await asyncio.sleep(0)
                self._retry_bounce_later(m)
                return
        try:
            qstate.remove_message(self.queue, m.qid)  # (unlinks only: on the loop)
        except OSError as err:  # what is left is removed as leftovers (clean_orphans)
            self.log.write(sendlog.warning(f"unable to remove msg {m.qid}: {err}"))
        self.messages.pop(m.qid, None)
        self.log.write(sendlog.end_msg(m.qid))

    def _retry_bounce_later(self, m: Message) -> None:
        async def later() -> None:
            await asyncio.sleep(BOUNCE_RETRY_SECONDS)
            await self._complete(m)
        self._spawn(later())

    async def _bounce(self, m: Message) -> None:
        """Send (or discard) the bounce of a finished message, then drop bounce/N. The files
        are read and written in threads; the log line and the message's state here."""
        made = await asyncio.to_thread(_queue_bounce, self.queue, m.qid, m.envelope.sender,
                                       m.birth, self.settings)
        if made is not None:
            decision, qp = made
            if decision.kind is BounceKind.TRIPLE_DISCARDED:
                self.log.write(sendlog.triple_bounce(m.qid))
            elif decision.kind is BounceKind.DOUBLE_DISCARDED:
                self.log.write(sendlog.double_bounce_discarded(m.qid))
            else:
                self.log.write(sendlog.bounce_msg(m.qid, qp))
        await asyncio.to_thread(_drop_bounce_reports, self.queue, m.qid)
        m.bounce_pending = False


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _queue_bounce(queue: Queue, qid: str, sender: str, arrival: float,
                  settings: dict[str, Any]) -> tuple[BounceDecision, int] | None:
    """Queue the bounce of message `qid` from `sender` as decide_bounce says (the queue's qp
    of the bounce, 0 when it is discarded); None when the message has no failure reports."""
    reports = qstate.read_bounce_reports(queue, qid)
    if not reports:
        return None
    original = queue.path("mess", qid).read_bytes()
    decision = decide_bounce(sender, original, settings)
    if not decision.sends:
        return decision, 0
    body = build_bounce(hostname=str(settings["server.hostname"]),
                        from_addr=bounce_sender(settings), to_addr=decision.to_addr,
                        reports=reports, original=original, arrival=arrival, qid=qid,
                        double=decision.kind is BounceKind.DOUBLE)
    env = Envelope(sender=decision.sender, recipients=[decision.to_addr], protocol="bounce",
                   extra={"bounce_of": qid})
    with queue.open_message() as w:
        w.write(body)
        w.commit(env)
    return decision, env.qp


def _drop_bounce_reports(queue: Queue, qid: str) -> None:
    queue.path("bounce", qid).unlink(missing_ok=True)
    fsync_dir(queue.root / "bounce")
