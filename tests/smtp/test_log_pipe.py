"""A worker's log lines reach the parent in batches: after LOG_HOLD, or at once on flush."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mailyard.logs import LogDir
from mailyard.smtp.workers import LOG_HOLD, MAX_DATAGRAM, LogPipe


def _datagrams(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(2 * MAX_DATAGRAM))
        except BlockingIOError:
            return got


def test_lines_wait_at_most_the_hold_or_a_flush_and_outside_a_loop_go_at_once() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pipe = LogPipe(theirs)

    async def batches() -> list[bytes]:
        pipe.write("connect a")
        pipe.write("accepted b\nforged line")  # a newline would split it: shown as ?
        await asyncio.sleep(0)
        assert _datagrams(mine) == []  # held: several turns' lines go together
        pipe.flush()  # as after an accepted message: at once
        first = _datagrams(mine)
        pipe.write("end c")
        pipe.write("next")
        await asyncio.sleep(LOG_HOLD * 4)  # no flush: the hold ends it
        return first + _datagrams(mine)

    got = asyncio.run(batches())
    assert got == [b"connect a\naccepted b?forged line", b"end c\nnext"]
    pipe.write("no loop here")
    assert _datagrams(mine) == [b"no loop here"]
    mine.close()
    pipe.close()


def test_a_full_datagram_is_sent_before_the_next_line_and_flush_sends_the_rest() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_DATAGRAM)
    pipe = LogPipe(theirs)
    line = "x" * 1000

    async def many() -> None:
        for _ in range(100):  # 100 kB: more than one datagram holds
            pipe.write(line)
        pipe.flush()

    asyncio.run(many())
    got = _datagrams(mine)
    assert len(got) == 2 and all(len(d) <= MAX_DATAGRAM for d in got)
    assert b"\n".join(got).split(b"\n") == [line.encode()] * 100
    mine.close()
    pipe.close()


def test_the_parent_stamps_every_line_of_a_datagram(tmp_path: Path) -> None:
    log = LogDir(tmp_path / "log")
    data = log.encode_lines(["one", "two\tok", "bad\x07bell"])
    lines = data.decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two\tok", "bad?bell"]
    assert len({line.split(" ", 1)[0] for line in lines}) == 1  # one stamp: they came at once
    log.close()
