"""Local delivery of one recipient: alias and forward, or the mailbox's Maildir.

qmail-local's behaviour in our store's terms: an alias forwards a copy (a new queued message
carrying a Delivered-To line for the alias) and may keep one; a mailbox gets the message in
its Maildir with Return-Path and Delivered-To on top, in the folder the mailbox filter
chooses (spam handling); a message that already has our Delivered-To line for this address
is looping and fails; an address with neither fails as unknown.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import quota
from ..fssync import Steps, run_steps
from ..home import Home
from ..mailauth.forwarding import Forwarder
from ..mailauth.srs import SrsError
from ..mailboxes import ensure_maildir, folder_dir
from ..queue import Envelope, Queue, QueueError
from ..queue.envelope import QUARANTINE as QUARANTINE_KEY
from ..queue.envelope import TRACE_HEADERS as TRACE_KEY
from ..store.cache import answering_from_cache
from ..sync_process import LoopSync
from . import quota_warning
from .batch import Batcher
from .lookup import Recipients
from .maildir import SYNC_ROUNDS, deliver_many_steps
from .result import Result, deferral, failure, success

# More Delivered-To lines than this is a loop through addresses we cannot see (Postfix's
# hopcount_limit is 50; qmail has none beyond the exact-line check).
MAX_DELIVERED_TO = 50
LOOP_TEXT = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
HOPS_TEXT = (f"This message is looping: it has more than {MAX_DELIVERED_TO} Delivered-To "
             "lines. (#5.4.6)")
UNKNOWN_TEXT = "Sorry, no mailbox here by that name. (#5.1.1)"
QUOTA_TEXT = "The mailbox is full and this message does not fit. (#{status})"
# A message that does not fit a full mailbox is retried this long before it bounces: a day,
# time enough for its owner to make room (qmail and Postfix bounce an over-quota mailbox at
# once when asked to; Dovecot's LMTP at once by default).
QUOTA_GRACE_SECONDS = 24 * 3600
DISABLED_TEXT = "Sorry, this mailbox is disabled. (#5.2.1)"
NOT_IN_CACHE_TEXT = ("The store is unreachable and this address is not in the node's local "
                     "copy of it; trying again later. (#4.3.0)")

_CRLF = re.compile(rb"\r\n")
_LF = re.compile(rb"\n")

# Where a DMARC quarantine files a message (the folder the spam filter files spam in).
QUARANTINE_FOLDER = "Spam"

@dataclass(frozen=True)
class MailboxVerdict:
    """What the mailbox filter decided (mirrors mailyard.filters.mailbox.MailboxVerdict)."""

    message: bytes
    folder: str = "INBOX"
    discard: bool = False


Scanner = Callable[[Home, dict[str, Any], str, bytes], Awaitable[Any]]


def _pass_through() -> Scanner:
    async def scan(home: Home, settings: dict[str, Any], address: str,
                   message: bytes) -> MailboxVerdict:
        return MailboxVerdict(message)
    return scan


def mailbox_scanner() -> Scanner:
    """The spam hook: mailyard.filters.mailbox.scan_for_mailbox when it is installed."""
    try:
        from ..filters.mailbox import scan_for_mailbox
    except ImportError:
        return _pass_through()
    return scan_for_mailbox


def header_block(message: bytes) -> bytes:
    """The header section of a message (up to the first empty line)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = message.find(sep)
        if end >= 0:
            other = b"\n\n" if sep == b"\r\n\r\n" else b"\r\n\r\n"
            other_end = message.find(other)
            if 0 <= other_end < end:
                return message[:other_end]
            return message[:end]
    return message


def delivered_to(message: bytes) -> list[str]:
    """The addresses of the message's Delivered-To lines, lowercased."""
    out = []
    for line in header_block(message).split(b"\n"):
        if line[:13].lower() == b"delivered-to:":
            out.append(line[13:].strip().decode("utf-8", "replace").lower())
    return out


def to_unix_lines(message: bytes) -> bytes:
    """CRLF line endings as LF, as mail files on Unix (and Dovecot's maildir) keep them."""
    return _CRLF.sub(b"\n", message)


def without_forged_results(message: bytes, hostname: str) -> bytes:
    """The message without the Authentication-Results fields of its header that name
    `hostname` as their author: only we may write those (RFC 8601 5), and a sender must not
    be able to hand the reader our verdict on its own mail."""
    head = header_block(message)
    if not hostname or b"authentication-results" not in head.lower():
        return message
    ours = hostname.lower().rstrip(".").encode()
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a continuation belongs to the field before it
            if not dropping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        authserv = value.split(b";", 1)[0].split()[:1]
        dropping = bool(colon) and name.strip().lower() == b"authentication-results" and \
            bool(authserv) and authserv[0].lower().rstrip(b".") == ours
        if not dropping:
            kept.append(line)
    return b"".join(kept) + message[len(head):]


def trace_fields(envelope: Envelope) -> bytes:
    """Header fields the smtp service decided on for this message (its
    Authentication-Results), to go on top of every copy we deliver."""
    text = envelope.extra.get(TRACE_KEY) or ""
    return to_unix_lines(str(text).encode("utf-8", "replace"))


def mailbox_copy(envelope: Envelope, address: str, message: bytes, hostname: str = "") -> bytes:
    top = (f"Return-Path: <{envelope.sender}>\nDelivered-To: {address}\n").encode(
        "utf-8", "surrogateescape")
    return top + trace_fields(envelope) + to_unix_lines(without_forged_results(message,
                                                                              hostname))


@dataclass
class LocalContext:
    home: Home
    settings: dict[str, Any]
    queue: Queue
    scanner: Scanner
    forwarder: Forwarder | None = None  # SRS and ARC for what aliases send on
    recipients: Recipients | None = None  # the store's in-process view (made when None)
    # Maildir writes of the deliveries under way, done together (batch.py; made when None:
    # on the event loop with `sync`'s rounds where syncfs rounds exist, else in a thread)
    writes: Batcher[_MaildirWrite, Path] | None = None
    sync: LoopSync | None = None
    # Maildir folders seen complete (new/ and tmp/ there), so a delivery into one costs no
    # stat; per context, so a reload (another mail.root) starts afresh. (address, folder) ->
    folders: dict[tuple[str, str], Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recipients is None:
            self.recipients = Recipients(self.home)
        if self.writes is None:
            if self.sync is not None and SYNC_ROUNDS:
                self.writes = Batcher.steps(_write_many_steps, self.sync)
            else:
                self.writes = Batcher(_write_many)


async def deliver_local(ctx: LocalContext, envelope: Envelope, recipient: str,
                        message: bytes) -> Result:
    """Deliver to one local recipient; store and disk trouble are deferrals."""
    address = recipient.lower()
    if ctx.forwarder is not None and ctx.forwarder.is_srs_address(address):
        return await _srs_bounce(ctx, envelope, address, message)
    seen = delivered_to(message)
    if address in seen:
        return failure(LOOP_TEXT, status="5.4.6")
    if len(seen) > MAX_DELIVERED_TO:
        return failure(HOPS_TEXT, status="5.4.6")
    try:
        assert ctx.recipients is not None
        alias, mailbox = await ctx.recipients.lookup(address)
    except Exception as err:  # the store is down or locked: try again later
        return deferral(f"Temporary failure looking up {address} in the store: "
                        f"{type(err).__name__}. (#4.3.0)", status="4.3.0")
    to_mailbox = 0
    forwards = 0
    notes: list[str] = []
    stored: list[str] = []  # after qmail-local's lines: the spam score and file (the trail)
    if alias is not None:
        if alias.keep_copy and mailbox is not None and mailbox.active:
            result = await _to_maildir(ctx, envelope, address, message, mailbox.quota_mb,
                                       stored)
            if result is not None:
                return result
            to_mailbox = 1
        try:
            qp = await asyncio.to_thread(_forward, ctx.queue, envelope, address, message,
                                          list(alias.targets), ctx.forwarder)
        except QueueError as err:
            return deferral(f"Unable to forward the message: {err}. (#4.3.0)", status="4.3.0")
        forwards = len(alias.targets)
        notes.append(f"qp {qp}")
    elif mailbox is None:
        if answering_from_cache(ctx.home):  # the copy may predate this mailbox: wait for it
            return deferral(NOT_IN_CACHE_TEXT, status="4.3.0")
        return failure(UNKNOWN_TEXT, status="5.1.1")
    elif not mailbox.active:
        return failure(DISABLED_TEXT, status="5.2.1")
    else:
        result = await _to_maildir(ctx, envelope, address, message, mailbox.quota_mb, stored)
        if result is not None:
            return result
        to_mailbox = 1
    return success("\n".join([f"did {to_mailbox}+{forwards}+0", *notes, *stored]))


async def _to_maildir(ctx: LocalContext, envelope: Envelope, address: str,
                      message: bytes, quota_mb: int = 0,
                      notes: list[str] | None = None) -> Result | None:
    """None when delivered (or discarded by the filter), else the deferral or failure.
    `notes` gets the report's lines for the trail: the spam score, the file written."""
    if quota_mb:
        full = await asyncio.to_thread(_over_quota, ctx, envelope, address, quota_mb,
                                       len(message))
        if full is not None:
            return full
    copy = mailbox_copy(envelope, address, message, str(ctx.settings["server.hostname"]))
    try:
        verdict = await ctx.scanner(ctx.home, ctx.settings, address, copy)
    except Exception as err:  # the hook must not lose mail: deliver unfiltered
        verdict = MailboxVerdict(copy)
        _ = err
    folder = verdict.folder
    if envelope.extra.get(QUARANTINE_KEY):
        # DMARC quarantine: the Spam folder, even for a mailbox whose spam stays in the
        # inbox or is thrown away (this is the sender's domain's word, not a score)
        folder = QUARANTINE_FOLDER
    elif verdict.discard:
        return None
    if notes is not None and verdict.score is not None:
        notes.append(f"spam score {verdict.score:g}")
    try:
        assert ctx.writes is not None
        written = await ctx.writes.submit((ctx, address, folder, verdict.message))
        if notes is not None:  # the folder and file name (a `/` would end a report line)
            inbox = written.parent.parent == ctx.home.maildir(address)
            notes.append(f"maildir {'INBOX' if inbox else written.parent.parent.name} "
                         f"{written.name}")
        if quota_mb:
            await asyncio.to_thread(quota.add, ctx.home.maildir(address), len(verdict.message))
            await asyncio.to_thread(quota_warning.after_delivery, ctx.home.maildir(address),
                                    address, quota_mb, str(ctx.settings["server.hostname"]))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            text = f"Unable to write the message: {err.strerror}. (#4.3.0)"
        else:
            text = f"Unable to deliver to the Maildir: {err.strerror or err}. (#4.2.1)"
        return deferral(text, status="4.3.0")
    return None


def _over_quota(ctx: LocalContext, envelope: Envelope, address: str, quota_mb: int,
                size: int) -> Result | None:
    """A message that does not fit waits (the mailbox may be emptied) until it has been
    queued for QUOTA_GRACE_SECONDS, then bounces; SMTP refuses at RCPT when the mailbox is
    already full, so this is the rare race of several messages at once."""
    try:
        used = quota.current(ctx.home.maildir(address), quota_mb)
    except FileNotFoundError:
        return None
    if not quota.over(quota_mb, used, size):
        return None
    if time.time() - envelope.time < QUOTA_GRACE_SECONDS:
        return deferral(QUOTA_TEXT.format(status="4.2.2"), status="4.2.2")
    return failure(QUOTA_TEXT.format(status="5.2.2"), status="5.2.2")


# (context, address, folder, message): one Maildir write of a batch
_MaildirWrite = tuple[LocalContext, str, str, bytes]
# Folders remembered at most per context (a node with more active mailboxes looks some up
# again); one that has gone since is forgotten when a write into it fails, and made again.
KNOWN_FOLDERS_MAX = 4096


def _target(ctx: LocalContext, address: str, folder: str) -> Path:
    """The folder a message for `address` goes to, made if the mailbox has no Maildir yet;
    the mailbox's inbox when it has no such folder."""
    key = (address, folder)
    known = ctx.folders.get(key)
    if known is not None:
        return known
    maildir = ctx.home.maildir(address)
    target = folder_dir(maildir, folder)
    if not (target / "new").is_dir() or not (target / "tmp").is_dir():
        ensure_maildir(ctx.home, address, bool(ctx.settings.get("spam.bayes_imap_training")))
        if not (target / "new").is_dir():  # a folder the mailbox does not have
            target = maildir
    if len(ctx.folders) >= KNOWN_FOLDERS_MAX:
        ctx.folders.clear()
    ctx.folders[key] = target
    return target


def _write_many(items: list[_MaildirWrite]) -> list[Path | BaseException]:
    """The Maildir writes of a batch in this thread (`_write_many_steps` driven here)."""
    return run_steps(_write_many_steps(items))


def _write_many_steps(items: list[_MaildirWrite]) -> Steps[list[Path | BaseException]]:
    """The Maildir writes of a batch: each folder found, then every message written with
    the batch's shared sync rounds (maildir.deliver_many_steps); a folder gone meanwhile is
    looked for again, once."""
    answers: list[Path | BaseException] = [OSError("not written")] * len(items)
    todo: list[tuple[int, Path, bytes]] = []
    for i, (ctx, address, folder, message) in enumerate(items):
        try:
            todo.append((i, _target(ctx, address, folder), message))
        except OSError as err:
            answers[i] = err
    for attempt in range(2):
        results = yield from deliver_many_steps([(target, message)
                                                 for _, target, message in todo])
        again: list[tuple[int, Path, bytes]] = []
        for (i, _, message), result in zip(todo, results, strict=True):
            if isinstance(result, FileNotFoundError) and attempt == 0:  # the folder went
                ctx, address, folder, _ = items[i]
                ctx.folders.pop((address, folder), None)
                try:
                    again.append((i, _target(ctx, address, folder), message))
                except OSError as err:
                    answers[i] = err
            else:  # the file's path in new/, or the error that stopped it
                answers[i] = result
        if not again:
            break
        todo = again
    return answers


def _forward(queue: Queue, envelope: Envelope, address: str, message: bytes,
             targets: list[str], forwarder: Forwarder | None = None) -> int:
    """Queue a copy for the alias's targets; returns its qp (as qmail-local reports it). A
    copy for targets of other servers gets an SRS sender and an ARC set when the forwarder
    says so; targets on this node keep the original sender (SPF is not asked again here)."""
    remote = [t for t in targets if forwarder is not None and not forwarder.is_local(t)]
    local = [t for t in targets if t not in remote]
    qp = 0
    if local:
        qp = _queue_copy(queue, envelope, address, message, local, envelope.sender, b"")
    if remote:
        assert forwarder is not None
        trace = trace_fields(envelope).replace(b"\n", b"\r\n")
        crlf = trace + _LF.sub(b"\r\n", to_unix_lines(message))
        arc = forwarder.arc_set(crlf, address.rpartition("@")[2])
        qp = _queue_copy(queue, envelope, address, message, remote,
                         forwarder.sender_for(envelope.sender), arc)
    return qp


def _queue_copy(queue: Queue, envelope: Envelope, address: str, message: bytes,
                targets: list[str], sender: str, arc: bytes) -> int:
    forward = Envelope(sender=sender, recipients=list(targets), protocol="local",
                       extra={"forwarded_for": address})
    with queue.open_message() as w:
        w.write(to_unix_lines(arc))  # the ARC set above everything it seals
        w.write(f"Delivered-To: {address}\n".encode("utf-8", "surrogateescape"))
        w.write(trace_fields(envelope))  # the next hop sees what we found
        w.write(to_unix_lines(message))
        w.commit(forward)
    return forward.qp


async def _srs_bounce(ctx: LocalContext, envelope: Envelope, address: str,
                      message: bytes) -> Result:
    """A message to one of our SRS addresses (a bounce of mail we forwarded): passed on to
    the sender it stands for; an address we did not make (or too old) is refused."""
    assert ctx.forwarder is not None
    try:
        original = ctx.forwarder.original(address)
    except SrsError as exc:
        return failure(f"Sorry, {exc}. (#5.1.1)", status="5.1.1")
    bounce = Envelope(sender=envelope.sender, recipients=[original], protocol="local",
                      extra={"srs_for": address})

    def queue_it() -> int:
        with ctx.queue.open_message() as w:
            w.write(to_unix_lines(message))
            w.commit(bounce)
        return bounce.qp

    try:
        qp = await asyncio.to_thread(queue_it)
    except QueueError as err:
        return deferral(f"Unable to pass the bounce on: {err}. (#4.3.0)", status="4.3.0")
    return success(f"did 0+1+0\nqp {qp}\nSRS: back to {original}")
