"""Reading a node's logs for `mailyard trail` and the panel's Trail page.

The SMTP services' logs (HOME/log/smtp, HOME/log/submission) are read first, then the send
log (HOME/log/send), each directory oldest file first (`logtools.sources.log_files`), from
`since` on (rotated files closed before it are skipped, the first file is entered by a
binary search on its stamps: `logtools.selectors.first_line_where`). Each file is read in
large blocks (`logtools.blocks.blocks`) and a block is only split into lines when a cheap
byte test finds what the trail follows in it: the query's text, or `msg N` / `delivery D`
/ `qp P` of the messages it follows at that moment (`TrailBuilder.send_needles`); only
those lines are decoded and parsed (trail.py). A month of logs is mostly skipped that way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .logtools.blocks import blocks
from .logtools.selectors import first_line_where
from .logtools.sources import SourceError, log_files
from .logtools.tai64n import Clock, split_stamp
from .logtools.webmail import SMTP_SERVICES
from .trail import Query, Trail, TrailBuilder

SEND_SERVICE = "send"
# Past this many numbers followed at once, a block is not tested for each of them (that
# would cost more than reading its lines): every line of the block is looked at instead.
MAX_BLOCK_NEEDLES = 24

_NUMBERS_RE = re.compile(rb"(msg|delivery|qp) ([0-9]+)")
_EXITING = b"status: exiting"


def trail(logs: Path, query: Query, since: float | None = None) -> Trail:
    """The trail of `query` in the log directories below `logs` (HOME/log)."""
    builder = TrailBuilder(query)
    clock = Clock()
    needle = query.smtp_needle().lower() if query.folds_case else query.smtp_needle()
    for service in SMTP_SERVICES:
        for block in _blocks(logs / service, since, clock):
            for line in _lines_with(block, needle, query.folds_case):
                stamped = _stamped(line, clock)
                if stamped is not None:
                    builder.smtp_line(service, *stamped)
    builder.smtp_done()
    address = needle if query.kind == "address" else None
    for block in _blocks(logs / SEND_SERVICE, since, clock):
        _send_block(block, builder, address, clock)
    return builder.finish()


def _blocks(logdir: Path, since: float | None, clock: Clock) -> Iterator[bytes]:
    """The whole-line blocks of a log directory's files from `since` on, oldest first."""
    try:
        files = log_files(logdir)
    except SourceError:
        return  # the service never ran on this node
    for lf in files:
        if since is not None and lf.rotated_at is not None and lf.rotated_at < since:
            continue
        try:
            f = open(lf.path, "rb")  # noqa: SIM115
        except OSError:
            continue  # rotated away while we read the directory
        with f:
            if since is not None:
                size = f.seek(0, 2)
                f.seek(first_line_where(f, 0, size, lambda t: t >= since, clock))
            for block, _tail in blocks(f):  # a last line without its end is being written
                if block:
                    yield block


def _lines_with(block: bytes, needle: bytes, fold: bool) -> Iterator[bytes]:
    """The lines of `block` that contain `needle` (lower-cased first when `fold`)."""
    hay = block.lower() if fold else block
    pos = hay.find(needle)
    while pos >= 0:
        start = block.rfind(b"\n", 0, pos) + 1
        end = block.find(b"\n", pos)
        yield block[start:end]
        pos = hay.find(needle, end)


def _stamped(line: bytes, clock: Clock) -> tuple[float, str] | None:
    s = split_stamp(line.decode("utf-8", "surrogateescape"))
    if s is None:
        return None
    try:
        return clock.unix(s), s.text
    except ValueError:
        return None


def _last_time(block: bytes, clock: Clock) -> float:
    """The time of a block's last line (infinity if it has no readable stamp)."""
    start = block.rfind(b"\n", 0, len(block) - 1) + 1
    stamped = _stamped(block[start:], clock)
    return stamped[0] if stamped is not None else float("inf")


def _send_block(block: bytes, builder: TrailBuilder, address: bytes | None,
                clock: Clock) -> None:
    qids, deliveries, qps = builder.send_needles(_last_time(block, clock))
    hay = block.lower() if address is not None else block
    if not (address is not None and address in hay):
        count = len(qids) + len(deliveries) + len(qps)
        if count == 0:
            return
        if count <= MAX_BLOCK_NEEDLES and not (
                any(b"msg %d" % n in block for n in qids)
                or any(b"delivery %d:" % n in block for n in deliveries)
                or any(b"qp %d" % n in block for n in qps)
                or (deliveries and _EXITING in block)):
            return
    lows = hay.split(b"\n") if address is not None else None
    for i, line in enumerate(block.split(b"\n")):
        if not line:
            continue
        if not ((lows is not None and address in lows[i])  # type: ignore[operator]
                or _follows(line, builder)):
            continue
        stamped = _stamped(line, clock)
        if stamped is not None:
            builder.send_line(*stamped)


def _follows(line: bytes, builder: TrailBuilder) -> bool:
    """Whether a send-log line names a message, delivery or qp the builder follows now."""
    for kind, number in _NUMBERS_RE.findall(line):
        if builder.follows(kind.decode(), int(number)):
            return True
    return line.endswith(_EXITING)
