"""The fast path of the operators: the send log read in large blocks of bytes.

One compiled pattern runs over each block and picks out, with their fields, the lines a
report needs (`starting delivery`, `delivery N:`, `new msg`, `info msg`, `end msg`,
`status: exiting`); every other line of the block must be one the report may ignore
(another `status:` line, a well-formed bounce line, a warning or other text).  The state is
the reference's own (`Tracker`, `TopCounter`): updated inline for Top, through the
Tracker's methods for Show (which prints only results, so its cost is in formatting them).

A block is only taken this way when it is plain: tai64n stamps on every line, no CR, no line
that starts like a known line but does not fit it, no administrator's action (`hold msg`,
`release msg`, ...: rare lines, counted in the notes).  Any other block (a stamp in another
form or unreadable, a CR LF line end, a malformed line) is decoded and read line by line by
the reference (`TopCounter.feed`), which counts and reports what it does not understand, so
the two paths give the same report and the same warning.  The tests check that on generated
logs with every hard case.

When the compiled core (`_fastcount.c`, built at install) is there, Top uses it instead
(`_top_rows_native`): it reads every plain line itself, line by line in C, and leaves the
other lines, one at a time, to the reference parser here, which applies them to the same
state; the pure-Python reader above is the fallback, and the tests check all three agree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import BinaryIO

from mailyard.logtools.operators import RESULT_COLUMN, Attempt, TopCounter, TopSpec, attempts
from mailyard.logtools.parser import EXITING as EXITING_TEXT
from mailyard.logtools.parser import (
    DeliveryResult,
    EndMsg,
    InfoMsg,
    Malformed,
    NewMsg,
    QueueAction,
    StartDelivery,
    domain_of,
    mailbox_address,
    parse,
)
from mailyard.logtools.sources import SourceError, stamped_lines
from mailyard.logtools.tai64n import Stamped
from mailyard.logtools.tracking import UNKNOWN_ROW, Delivery, Diagnostics, Message, Tracker

try:
    from mailyard.logtools import _fastcount  # the compiled counting core (setup.py builds it)
except ImportError:  # not built (no C compiler at install): the pure-Python reader below
    _fastcount = None  # type: ignore[assignment]

# Whether top_rows_blocks uses the compiled core when it is there (tests compare both paths).
NATIVE = _fastcount is not None
_BY_CODE = {"recipient": 0, "sender": 1, "user": 2}
_CHANNEL_CODE = {None: 0, "local": 1, "remote": 2}

# Bytes read at once.  Large enough that the per-block work (a few counts, one pattern
# start) is negligible, small enough to stay far below the memory budget of a stage.
BLOCK_BYTES = 1 << 20

# Recipients whose row key is remembered between lines: the same addresses recur all day,
# and working the key out again (decode, virtual-domain prefix, domain) costs more than the
# look-up.  Emptied when full, so it stays a few MB.
MAX_CACHED_RECIPIENTS = 50_000
Caches = tuple[dict[bytes, tuple[str, str, str]], dict[bytes, tuple[str, str, str]]]

# Every whole line of a block starts at "\n" (the block is read with the previous "\n" in
# front).  Branch order is frequency order; a group at the end of each branch tells them
# apart through `lastindex`.
_LINE = re.compile(
    rb"\n@[0-9a-fA-F]{24} (?:"
    rb"(?P<exiting>status: exiting(?=\n))"                                      # 1
    rb"|(?P<status>status: )"                                                   # 2
    rb"|starting delivery ([0-9]+): msg ([0-9]+) to (local|remote) "
    rb"(?P<start>[^ \n]*)(?=[ \n])"                                             # 3-6
    rb"|delivery ([0-9]+): (?:(?P<success>success:)|(?P<deferral>deferral:)"
    rb"|(?P<failure>failure:)|(?P<mangled>report mangled, will defer(?=\n)))"   # 7-11
    rb"|info msg ([0-9]+): bytes ([0-9]+) from <([^\n]*)> qp [0-9]+ uid "
    rb"(?P<info>[0-9]+)(?=[ \n])"                                               # 12-15
    rb"|new msg (?P<new>[0-9]+)(?=[ \n])"                                       # 16
    rb"|end msg (?P<end>[0-9]+)(?=[ \n])"                                       # 17
    rb"|(?P<ignored>bounce msg [0-9]+ qp [0-9]+(?=[ \n])"
    rb"|(?:triple|double) bounce: discarding bounce/[0-9]+(?=[ \n]))"           # 18
    rb"|(?P<malformed>starting delivery |delivery |new msg |info msg |end msg "
    rb"|bounce msg |triple bounce: |double bounce: )"                           # 19
    # the administrator's actions (parser.QueueAction): rare, read by the reference
    rb"|(?P<action>hold msg |release msg |retry msg "
    rb"|warning: (?=[^\n]* by the administrator))"                              # 20
    rb"|(?P<other>))"                                                           # 21
)
_G = _LINE.groupindex
EXITING, STATUS, START, INFO, NEW, END = (_G["exiting"], _G["status"], _G["start"], _G["info"],
                                          _G["new"], _G["end"])
IGNORED, MALFORMED, ACTION, OTHER = _G["ignored"], _G["malformed"], _G["action"], _G["other"]
_RESULTS = {_G["success"]: RESULT_COLUMN["success"], _G["deferral"]: RESULT_COLUMN["deferral"],
            _G["failure"]: RESULT_COLUMN["failure"], _G["mangled"]: RESULT_COLUMN["mangled"]}
MANGLED = _G["mangled"]
_RESULT_NAMES = {_G["success"]: "success", _G["deferral"]: "deferral",
                 _G["failure"]: "failure", _G["mangled"]: "mangled"}


def open_input(file: str | None) -> tuple[BinaryIO, str]:
    """The bytes an operator reads: `-f FILE`, `-f -` or (default) standard input."""
    if file is None or file == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return open(file, "rb"), file  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot read {file}: {exc.strerror}") from exc


def blocks(stream: BinaryIO, size: int = BLOCK_BYTES) -> Iterator[tuple[bytes, bytes]]:
    """(whole lines, tail) pieces of a stream: each block ends at a line end; the tail is the
    last line of the stream when it has no line end (b"" otherwise), given with the last block.
    """
    pending = b""
    read = stream.read
    while True:
        chunk = read(size)
        if not chunk:
            yield b"", pending
            return
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n") + 1
        pending = data[cut:]
        if cut:
            yield data[:cut], b""


def _plain(block: bytes, lines: int) -> bool:
    """A block the pattern may read: every line starts with "@", and no CR anywhere."""
    return block[:1] == b"@" and block.count(b"\n@") + 1 == lines and b"\r" not in block


def top_rows_blocks(stream: BinaryIO, name: str, tracker: Tracker, spec: TopSpec, by: str,
                    channel: str | None, block_bytes: int = BLOCK_BYTES,
                    native: bool | None = None) -> dict[str, list[int]]:
    """The same rows as `operators.top_rows`, read block by block (see the module docstring):
    by the compiled core when it is built (and `native` is not False), else in Python.
    """
    if NATIVE if native is None else native:
        return _top_rows_native(stream, name, tracker, spec, by, channel, block_bytes)
    counter = TopCounter(tracker, spec, by, channel)
    caches: Caches = ({}, {})  # local and remote recipients
    diag = tracker.diag
    number = 0  # lines before the current block
    for block, tail in blocks(stream, block_bytes):
        if block:
            lines = block.count(b"\n")
            if not (_plain(block, lines) and _fast_block(block, lines, tracker, counter, caches)):
                counter.feed(stamped_lines(_block_lines(block), name, diag, number), tracker)
            number += lines
        if tail:
            diag.problem("truncated", f"{name} line {number + 1}")
    return counter.rows


def _block_lines(block: bytes) -> list[str]:
    """A block's lines as text, for the reference reader (lines end at LF only, as in files)."""
    text = block.decode("utf-8", "surrogateescape").split("\n")
    return [line + "\n" for line in text[:-1]]


def attempts_blocks(stream: BinaryIO, name: str, tracker: Tracker,
                    block_bytes: int = BLOCK_BYTES) -> Iterator[Attempt]:
    """The same attempts as `operators.attempts`, read block by block."""
    diag = tracker.diag
    number = 0
    for block, tail in blocks(stream, block_bytes):
        if block:
            lines = block.count(b"\n")
            matches = None
            if _plain(block, lines):
                matches = list(_LINE.finditer(b"\n" + block))
                if len(matches) != lines or any(m.lastindex in (MALFORMED, ACTION)
                                                for m in matches):
                    matches = None
            if matches is None:
                yield from attempts(stamped_lines(_block_lines(block), name, diag, number),
                                    tracker, actions=True)
            else:
                yield from _attempts_of(matches, block, tracker)
            number += lines
        if tail:
            diag.problem("truncated", f"{name} line {number + 1}")


def filter_lines_blocks(stream: BinaryIO, name: str, diag: Diagnostics,
                        block_bytes: int = BLOCK_BYTES) -> Iterator[Stamped]:
    """The lines an x-filter acts on, read block by block: the same as
    `sources.stamped_lines` less the lines every filter passes over (`status:` lines but
    `status: exiting`, warnings and other text), which are neither decoded nor parsed.  A
    block that is not plain is read line by line, as in `top_rows_blocks`."""
    number = 0
    for block, tail in blocks(stream, block_bytes):
        if block:
            lines = block.count(b"\n")
            matches = None
            if _plain(block, lines):
                matches = list(_LINE.finditer(b"\n" + block))
                if len(matches) != lines:
                    matches = None
            if matches is None:
                yield from stamped_lines(_block_lines(block), name, diag, number)
            else:
                data = b"\n" + block
                index = data.index
                for m in matches:
                    k = m.lastindex
                    if k == STATUS or k == OTHER:
                        continue
                    start = m.start() + 2  # after "\n@"
                    text = data[start + 25:index(b"\n", m.end())]
                    yield Stamped("tai64n", data[start:start + 24].decode("ascii"),
                                  text.decode("utf-8", "surrogateescape"))
            number += lines
        if tail:
            diag.problem("truncated", f"{name} line {number + 1}")


def _attempts_of(matches: list[re.Match[bytes]], block: bytes,
                 tracker: Tracker) -> Iterator[Attempt]:
    """The Tracker's steps for the matched lines of a plain block, and its attempts."""
    data = b"\n" + block
    for m in matches:
        k = m.lastindex
        if k == STATUS or k == OTHER or k == IGNORED:
            continue
        if k == START:
            tracker.start(StartDelivery(int(m[3]), int(m[4]),
                                        "local" if m[5] == b"local" else "remote",
                                        m[6].decode("utf-8", "surrogateescape")))
        elif k in _RESULTS:
            d = tracker.result(int(m[7]))
            if d is None:
                continue
            if k == MANGLED:
                report = ""
            else:
                nl = data.index(b"\n", m.end())
                raw = data[m.end() + 1 if data[m.end():m.end() + 1] == b" " else m.end():nl]
                report = raw.decode("utf-8", "surrogateescape")
            start = m.start() + 2  # after "\n@"
            stamp = Stamped("tai64n", data[start:start + 24].decode("ascii"), "")
            yield Attempt(stamp, _RESULT_NAMES[k], d.channel, d.recipient, report, d.message, d)
        elif k == INFO:
            # qp 0: the qp ties bounces, which matter only to filters (they read line by line)
            tracker.info(InfoMsg(int(m[12]), int(m[13]),
                                 m[14].decode("utf-8", "surrogateescape"), 0, int(m[15])))
        elif k == NEW:
            tracker.new_msg(int(m[16]))
        elif k == END:
            tracker.end(int(m[17]))
        elif k == EXITING:
            tracker.restart()


def _fast_block(block: bytes, lines: int, tracker: Tracker, counter: TopCounter,
                caches: Caches | None = None) -> bool:
    """Count one plain block; False (nothing changed) if it holds a line for the reference."""
    matches = list(_LINE.finditer(b"\n" + block))
    if len(matches) != lines:
        return False  # a line whose stamp the pattern could not read
    kinds = [m.lastindex for m in matches]
    if MALFORMED in kinds or ACTION in kinds:
        return False
    _apply(matches, kinds, tracker, counter, caches or ({}, {}))
    return True


def _recipient_keys(raw: bytes, local: bool, per_domain: bool) -> tuple[str, str, str]:
    """(channel, recipient, its row key by recipient) of a logged recipient."""
    recipient = raw.decode("utf-8", "surrogateescape")
    key = mailbox_address(recipient) if local else recipient
    if per_domain:
        key = domain_of(key) or key
    return ("local" if local else "remote"), recipient, key


def _apply(matches: list[re.Match[bytes]], kinds: list[int | None], tracker: Tracker,
           counter: TopCounter, caches: Caches) -> None:
    """The reference's Tracker and TopCounter steps for the matched lines, inline."""
    messages = tracker.messages
    deliveries = tracker.deliveries
    diag = tracker.diag
    rows = counter.rows
    channel_wanted = counter.channel
    by = counter.by
    per_domain = counter.per_domain
    results = _RESULTS
    max_deliveries = tracker.max_deliveries
    cache, remote_cache = caches
    skip = (STATUS, OTHER, IGNORED)
    for k, m in zip(kinds, matches, strict=True):
        if k in skip:
            continue
        if k == START:
            number = int(m[3])
            if number <= tracker.last_delivery:
                tracker.restart()
            tracker.last_delivery = number
            msg = int(m[4])
            message = messages.get(msg)
            if message is None:
                message = tracker._add_message(Message(msg, started_before_input=True))
                diag.early_messages += 1
            raw = m[6]
            local = m[5] == b"local"
            cached = cache.get(raw) if local else remote_cache.get(raw)
            if cached is None:
                cached = _recipient_keys(raw, local, per_domain)
                (cache if local else remote_cache)[raw] = cached
                if len(cache) + len(remote_cache) > MAX_CACHED_RECIPIENTS:
                    cache.clear()
                    remote_cache.clear()
            channel, recipient, recipient_key = cached
            d = Delivery(number, message, channel, recipient)
            deliveries.pop(number, None)
            deliveries[number] = d
            if len(deliveries) > max_deliveries:
                del deliveries[next(iter(deliveries))]
                diag.forgotten += 1
            if channel_wanted is not None and channel != channel_wanted:
                continue
            # key_address / key_domain of operators.py, inline
            if by == "recipient" or (by == "user" and local):
                key = recipient_key
            else:
                sender = message.sender
                key = "?" if sender is None else (sender or "<>")
                if per_domain and key != "?" and key != "<>":
                    key = domain_of(key) or key
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0, 0, 0]
            counted = message.counted
            if counted is None:
                counted = message.counted = set()
            if key not in counted:
                counted.add(key)
                row[0] += 1
                row[5] += message.bytes
            row[1] += 1
            d.row = row
        elif k in results:
            finished = deliveries.pop(int(m[7]), None)
            if finished is None:
                diag.problem("orphan_results", "")
                counter.orphan(_RESULT_NAMES[k])
            elif finished.row is not None:
                finished.row[results[k]] += 1
        elif k == INFO:
            msg = int(m[12])
            message = messages.get(msg)
            if message is None:
                message = tracker._add_message(Message(msg))
            message.bytes = int(m[13])
            message.sender = m[14].decode("utf-8", "surrogateescape")
            message.uid = int(m[15])
            # the qp (for tying bounces) matters only to filters, which read line by line
        elif k == NEW:
            tracker._add_message(Message(int(m[16])))
        elif k == END:
            messages.pop(int(m[17]), None)
        elif k == EXITING:
            tracker.restart()



# ---- the compiled core ---------------------------------------------------------------------

def _top_rows_native(stream: BinaryIO, name: str, tracker: Tracker, spec: TopSpec, by: str,
                     channel: str | None, block_bytes: int) -> dict[str, list[int]]:
    """`top_rows_blocks` by `_fastcount.Counter`: C reads every plain line; the lines it
    leaves (another stamp form, a CR, a malformed line, a number of more than 18 digits) are
    read here by the reference parser and applied to the same state."""
    if _fastcount is None:
        raise RuntimeError("the compiled counting core (_fastcount) is not built")
    counter = TopCounter(tracker, spec, by, channel)  # sets diag.orphans_counted
    per_domain = counter.per_domain

    def recipient_key(raw: bytes, local: bool) -> str:
        return _recipient_keys(raw, local, per_domain)[2]

    def sender_key(sender: str | None) -> str:
        key = "?" if sender is None else (sender or "<>")
        if per_domain and key != "?" and key != "<>":
            key = domain_of(key) or key
        return key

    def domain_key(raw_domain: bytes) -> str:  # the text after a recipient's last "@"
        return raw_domain.decode("utf-8", "surrogateescape").lower()

    native = _fastcount.Counter(_BY_CODE[by], _CHANNEL_CODE[channel], per_domain,
                                tracker.max_messages, tracker.max_deliveries,
                                MAX_CACHED_RECIPIENTS, recipient_key, sender_key, domain_key,
                                UNKNOWN_ROW)
    diag = tracker.diag
    number = 0
    feed = native.feed
    for block, tail in blocks(stream, block_bytes):
        size = len(block)
        pos = feed(block, 0) if size else 0
        while pos < size:
            nl = block.index(b"\n", pos) + 1
            _native_line(native, block[pos:nl], name, diag, number + block.count(b"\n", 0, pos))
            pos = feed(block, nl)
        number += block.count(b"\n")
        if tail:
            diag.problem("truncated", f"{name} line {number + 1}")
    restarts, early, forgotten, orphans = native.counts()
    tracker.restarts += restarts
    diag.early_messages += early
    diag.forgotten += forgotten
    diag.orphan_results += orphans
    rows: dict[str, list[int]] = native.rows()
    return rows


def _native_line(native: _fastcount.Counter, raw: bytes, name: str, diag: Diagnostics,
                 before: int) -> None:
    """One line the compiled core left, read as the reference reads it (`attempts`)."""
    text = raw.decode("utf-8", "surrogateescape")
    for s in stamped_lines([text], name, diag, before):
        t = s.text
        if t[:1] == "s" and t.startswith("status:"):
            if t == EXITING_TEXT:
                native.restart()
            continue
        ev = parse(t)
        if isinstance(ev, DeliveryResult):
            native.result(ev.delivery, RESULT_COLUMN[ev.result])
        elif isinstance(ev, StartDelivery):
            native.start(ev.delivery, ev.msg, ev.channel == "local",
                         ev.recipient.encode("utf-8", "surrogateescape"))
        elif isinstance(ev, NewMsg):
            native.new_msg(ev.msg)
        elif isinstance(ev, InfoMsg):
            native.info(ev.msg, ev.bytes, ev.sender)
        elif isinstance(ev, EndMsg):
            native.end_msg(ev.msg)
        elif isinstance(ev, QueueAction):
            diag.action(ev.action)
        elif isinstance(ev, Malformed):
            diag.problem("malformed", "")
        # a bounce, a discarded bounce, any other line: nothing to count
