"""A worker's log lines reach the parent one datagram per turn of the worker's event loop."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mailyard.logs import LogDir
from mailyard.smtp.workers import MAX_DATAGRAM, LogPipe


def _datagrams(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(2 * MAX_DATAGRAM))
        except BlockingIOError:
            return got


def test_lines_of_one_turn_travel_together_and_outside_a_loop_at_once() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pipe = LogPipe(theirs)

    async def two_turns() -> list[bytes]:
        pipe.write("connect a")
        pipe.write("accepted b\nforged line")  # a newline would split it: shown as ?
        pipe.write("end c")
        assert _datagrams(mine) == []  # held until the turn ends
        await asyncio.sleep(0)
        first = _datagrams(mine)
        pipe.write("next turn")
        await asyncio.sleep(0)
        return first + _datagrams(mine)

    got = asyncio.run(two_turns())
    assert got == [b"connect a\naccepted b?forged line\nend c", b"next turn"]
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
