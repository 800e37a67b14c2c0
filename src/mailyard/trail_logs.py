"""Reading a node's logs for `mailyard trail` and the panel's Trail page.

The SMTP services' logs (HOME/log/smtp, HOME/log/submission) are read first, then the send
log (HOME/log/send), each directory oldest file first (`logtools.sources.log_files`), from
`since` on (rotated files closed before it are skipped, the first file is entered by a
binary search on its stamps: `logtools.selectors.first_line_where`). Each file is read in
large blocks (`logtools.blocks.blocks`), and each block is searched for what the trail
follows in it: the query's text, or `msg N` / `delivery D` / `qp P` of the messages it
follows at that moment (`TrailBuilder.send_needles`); only the lines found are decoded and
parsed (trail.py). A month of logs is mostly passed over at the speed of a byte search.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from . import safefs
from .logtools.blocks import blocks
from .logtools.selectors import first_line_where
from .logtools.sources import SourceError, log_files
from .logtools.tai64n import Clock, split_stamp
from .logtools.webmail import SMTP_SERVICES
from .trail import Query, Trail, TrailBuilder

SEND_SERVICE = "send"
_EXITING = b"status: exiting"
_NEW = b"new msg "


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
    """The whole-line blocks of a log directory's files from `since` on, oldest first.

    The directory belongs to the mail owner and the trail may run as root: the directory
    and each file are opened without following a link, and only regular files are read."""
    try:
        files = log_files(logdir)
        dir_fd = safefs.open_dir(logdir.parent, logdir.name)
    except (SourceError, OSError):
        return  # the service never ran on this node (or its directory is not one)
    try:
        for lf in files:
            if since is not None and lf.rotated_at is not None and lf.rotated_at < since:
                continue
            f = _open_log(dir_fd, lf.path.name)
            if f is not None:
                yield from _file_blocks(f, since, clock)
    finally:
        os.close(dir_fd)


def _open_log(dir_fd: int, name: str) -> BinaryIO | None:
    """A log file of the directory, read-only, never through a link (None if it is not a
    regular file, or was rotated away while the directory was read)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _file_blocks(f: BinaryIO, since: float | None, clock: Clock) -> Iterator[bytes]:
    """The whole-line blocks of one open log file from `since` on."""
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
    """Feed the builder the lines of a send-log block that name what it follows, in order.

    Each text followed (the address, `msg N`, `delivery D:`, `qp P`) is looked for with
    `bytes.find`, from where it was last found; the nearest hit is taken next. After a line
    that changes what is followed, the new texts are looked for from the next line on, and
    those no longer followed are dropped. Every byte is passed over once per text, at
    memchr speed; no pattern is compiled."""
    until = _last_time(block, clock)
    hay = block.lower() if address is not None else block
    heap: list[tuple[int, bytes]] = []
    at: dict[bytes, int] = {}  # each followed text -> where it is next (its live heap entry)

    def look(text: bytes, start: int) -> None:
        found = hay.find(text, start)
        if found >= 0:
            at[text] = found
            heapq.heappush(heap, (found, text))
        else:
            at.pop(text, None)

    current = _texts(address, *builder.send_needles(until))
    for text in current:
        look(text, 0)
    look(_EXITING, 0)  # always followed: delivery numbers start again after it
    state = builder.following()
    done = 0  # the lines before this offset were read
    while heap:
        pos, text = heapq.heappop(heap)
        if at.get(text) != pos or (text not in current and text != _EXITING):
            continue  # a stale entry, or a text no longer followed
        end = block.find(b"\n", pos)
        end = len(block) if end < 0 else end
        if text == _NEW and not _awaited(hay, pos, end, builder):
            look(text, end + 1)
            continue
        if pos >= done:
            start = block.rfind(b"\n", 0, pos) + 1
            stamped = _stamped(block[start:end], clock)
            if stamped is not None:
                builder.send_line(*stamped)
            done = end + 1
        if builder.following() != state:
            state = builder.following()
            now = _texts(address, *builder.send_needles(until))
            for new in now - current:
                look(new, end + 1)
            current = now
        if text in current or text == _EXITING:  # a finished one is not looked for again
            look(text, end + 1)


def _awaited(hay: bytes, pos: int, end: int, builder: TrailBuilder) -> bool:
    """Whether the `new msg N` at `pos` starts a message the builder awaits."""
    number = hay[pos + len(_NEW):end].split(b" ", 1)[0]
    return number.isdigit() and builder.awaits(int(number))


def _texts(address: bytes | None, qids: set[int], awaiting: bool, deliveries: set[int],
           qps: set[int]) -> set[bytes]:
    """The texts a followed line holds. `msg 12` also finds `msg 123`: the parser tells.
    Messages accepted at SMTP time are awaited at their `new msg` line, each one read (a
    look for each awaited number would scan the block once per message)."""
    texts = {b"msg %d" % n for n in qids} | {b"delivery %d:" % n for n in deliveries} \
        | {b"qp %d" % n for n in qps}
    if awaiting:
        texts.add(_NEW)
    if address is not None:
        texts.add(address)
    return texts
