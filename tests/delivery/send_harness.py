"""Test harness for delivery: the send service as a real subprocess, an SMTP sink and a DNS
server on loopback, and helpers to inject and to read mailboxes and the send log."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.conftest import free_port_base  # noqa: E402,F401
from tests.dns_support import DnsServer, ZoneResolver  # noqa: F401 (re-exported for the tests)
from tests.waiting import wait_until

from mailyard.home import Home
from mailyard.queue import Envelope, Queue
from mailyard.services.privileges import mail_owner, running_as_root

WAIT_SECONDS = 60.0  # generous: tests poll for an outcome, they never assert on timing


def open_home_to_mail_owner(home: Home) -> None:
    """Let the mail owner (the service after dropping root) reach the home and its store.

    pytest's base temp directory is 0700 root, and the store file belongs to root after init;
    SQLite in WAL mode needs to write next to the store even to read it.
    """
    if not running_as_root():
        return
    uid, gid = mail_owner()
    for parent in reversed(home.root.parents):
        if str(parent) in ("/", "/tmp"):
            continue
        mode = parent.stat().st_mode & 0o7777
        os.chmod(parent, mode | 0o011)
    os.chown(home.root, 0, gid)
    os.chmod(home.root, 0o2770)
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        path = home.root / name
        if path.exists():
            os.chown(path, uid, gid)
            os.chmod(path, 0o660)
    for path in (home.etc_dir, home.run_dir, home.var_dir):
        os.chown(path, uid, gid)


class SmtpService:
    """The smtp service (mailyard.smtp.service.run_smtp) as a real process."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = home.port("smtp")

    def start(self) -> None:
        code = ("from mailyard.home import Home; from mailyard.smtp.service import run_smtp; "
                f"run_smtp(Home.find({str(self.home.root)!r}))")
        with open(self.home.root / "smtp.stderr", "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err,
                                         start_new_session=True)

        def accepting() -> bool:
            assert self.proc is not None and self.proc.poll() is None, \
                (self.home.root / "smtp.stderr").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, what="smtp to accept connections")

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.proc = None


class SendService:
    """The send service as a real process in its own session."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = home.root / "send.stderr"

    def start(self) -> None:
        code = ("from mailyard.home import Home; from mailyard.delivery.service import run; "
                f"run(Home.find({str(self.home.root)!r}))")
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err,
                                         start_new_session=True)
        wait_until(lambda: self.log_lines() and any(
            line.startswith("status:") for line in self.log_lines()[-50:])
            or self._died(), what="send to start")
        assert not self._died(), self.stderr.read_text()

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_lines(self) -> list[str]:
        return read_send_log(self.home)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.proc = None


def read_send_log(home: Home) -> list[str]:
    """The send log's lines without their tai64n stamps, rotated files first."""
    log = home.service_log_dir("send")
    out: list[str] = []
    if not log.exists():
        return out
    for path in sorted(log.glob("@*.s")) + [log / "current"]:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                out.append(line.split(" ", 1)[1] if line.startswith("@") else line)
    return out


def inject(home: Home, recipients: list[str], body: bytes | None = None,
           sender: str = "alice@remote.test", subject: str = "test") -> str:
    data = body if body is not None else (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@remote.test>\r\n\r\nHello there.\r\n").encode()
    with Queue(home.queue_dir).open_message() as w:
        w.write(data)
        return w.commit(Envelope(sender=sender, recipients=recipients))


def maildir_messages(home: Home, address: str, folder: str = "new") -> list[bytes]:
    path = home.maildir(address) / folder
    if not path.exists():
        return []
    return [p.read_bytes() for p in sorted(path.iterdir())]


def queue_empty(home: Home, states: tuple[str, ...] = ("todo", "info", "mess", "local",
                                                       "remote", "bounce")) -> bool:
    q = Queue(home.queue_dir)
    return not any(q.ids(s) for s in states)


def queue_listing(home: Home) -> dict[str, list[str]]:
    q = Queue(home.queue_dir)
    return {s: sorted(q.ids(s)) for s in ("todo", "info", "mess", "local", "remote", "bounce")}


# ---- an SMTP sink on loopback --------------------------------------------------------------------

@dataclass
class SinkMessage:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool


@dataclass
class SmtpSink:
    """A small SMTP server: `replies` maps a recipient to the RCPT reply (default 250)."""

    host: str
    port: int
    messages: list[SinkMessage] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    default_rcpt_reply: str = "250 2.1.5 ok"
    data_reply: str = "250 2.0.0 queued as 1"
    starttls_context: object = None
    connections: int = 0
    greeting_delay: float = 0.0  # seconds of silence before the greeting
    data_delay: float = 0.0  # seconds before the reply to the final dot
    hold: threading.Event | None = None  # when given, each greeting waits until it is set
    ehlo_name: str = "sink.test"  # the name in the EHLO reply's first line
    greeting_lines: int = 1  # a greeting of this many lines ("220-" continuation lines first)
    line_delay: float = 0.0  # seconds between the lines of the greeting
    open_sessions: int = 0  # sessions connected right now
    most_open: int = 0  # the most sessions connected at once


async def _sink_session(sink: SmtpSink, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    sink.connections += 1
    sink.open_sessions += 1
    sink.most_open = max(sink.most_open, sink.open_sessions)
    tls = False

    async def send(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    if sink.greeting_delay:
        await asyncio.sleep(sink.greeting_delay)
    if sink.hold is not None:
        await asyncio.to_thread(sink.hold.wait)
    for _ in range(sink.greeting_lines - 1):
        await send("220-sink.test says hello")
        await asyncio.sleep(sink.line_delay)
    await send("220 sink.test ESMTP")
    sender, rcpts = "", []
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                if verb == "EHLO":
                    extra = ["250-STARTTLS"] if sink.starttls_context and not tls else []
                    for text in [f"250-{sink.ehlo_name}", *extra, "250-SIZE 100000000"]:
                        await send(text)
                    await send("250 8BITMIME")
                else:
                    await send("250 sink.test")
            elif cmd.upper() == "STARTTLS":
                await send("220 go ahead")
                await writer.start_tls(sink.starttls_context)
                tls = True
            elif verb == "MAIL":
                sender = cmd[cmd.index("<") + 1:cmd.index(">")]
                rcpts = []
                await send("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt = cmd[cmd.index("<") + 1:cmd.index(">")]
                reply = sink.replies.get(rcpt, sink.default_rcpt_reply)
                if reply.startswith("2"):
                    rcpts.append(rcpt)
                await send(reply)
            elif verb == "DATA":
                await send("354 go on")
                chunks = []
                while True:
                    chunk = await reader.readline()
                    if not chunk:
                        return  # the client went away in the middle: nothing was delivered
                    if chunk == b".\r\n":
                        break
                    chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                if sink.data_delay:
                    await asyncio.sleep(sink.data_delay)
                if sink.data_reply.startswith("2"):
                    sink.messages.append(SinkMessage(sender, list(rcpts), b"".join(chunks), tls))
                await send(sink.data_reply)
            elif verb == "QUIT":
                await send("221 bye")
                return
            elif verb == "RSET":
                await send("250 ok")
            else:
                await send("502 5.5.2 not implemented")
    except (ConnectionError, OSError):
        return
    finally:
        sink.open_sessions -= 1
        writer.close()


def start_sink(host: str = "127.0.0.1", port: int = 0,
               **kw: object) -> tuple[SmtpSink, Callable[[], None]]:
    """Start a sink in a background thread; returns it and a function that stops it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _sink_session(holder["sink"], r, w), host, port)  # type: ignore[arg-type]
        bound = server.sockets[0].getsockname()[1]
        holder["sink"] = SmtpSink(host, bound, **kw)  # type: ignore[arg-type]
        holder["server"] = server
        ready.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(target=lambda: _run_loop(loop, main()), daemon=True)
    thread.start()
    assert ready.wait(10), "sink did not start"

    def stop() -> None:
        loop.call_soon_threadsafe(holder["server"].close)  # type: ignore[attr-defined]
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)

    return holder["sink"], stop  # type: ignore[return-value]


def _run_loop(loop: asyncio.AbstractEventLoop, coro: object) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(coro)  # type: ignore[arg-type]
    except (asyncio.CancelledError, Exception):
        pass
    # Sessions still open (a client keeping its connection for reuse) end here, inside the
    # loop, rather than being collected later with the loop closed.
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


# The DNS server on loopback lives in tests/dns_support.py (shared by the whole suite).


