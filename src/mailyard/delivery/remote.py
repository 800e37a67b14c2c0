"""Remote delivery of one recipient over SMTP, with qmail-remote's reports.

Route or MX, then each address of each host in order until one answers; opportunistic
STARTTLS (certificates are not checked: the aim is privacy against listeners, and an
unverifiable certificate is no reason to send in clear instead); 4xx and dead connections
are deferrals, 5xx failures.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncresolver

from .resolve import DnsError, MailHost, host_addresses, mail_hosts, make_resolver
from .result import Result, deferral, failure, success
from .routes import route_for
from .smtp_reply import Reply, ReplyError, ReplyReader, dot_stuffed

# Bytes of DATA gathered before each write: big enough to keep the socket busy.
DATA_CHUNK_BYTES = 64 * 1024
# The longest reply line we read (RFC 5321 4.5.3.1.5 says 512; servers send more).
MAX_LINE_BYTES = 64 * 1024
# qmail's marker for the sender of a double bounce; on the wire it is the null sender.
DOUBLE_BOUNCE_SENDER = "#@[]"


class ConnectionDied(Exception):
    pass


@dataclass
class RemoteSettings:
    helo: str
    routes: list[str]
    connect_timeout: float
    response_timeout: float
    resolver: dns.asyncresolver.Resolver

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RemoteSettings:
        return cls(helo=str(settings["server.hostname"]),
                   routes=list(settings["send.smtp_routes"]),
                   connect_timeout=float(settings["send.connect_timeout"]),
                   response_timeout=float(settings["send.response_timeout"]),
                   resolver=make_resolver(str(settings["smtp.dns_resolver"])))


_TLS_CONTEXT: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One client context for opportunistic TLS, made once: loading a CA store costs ~50 ms
    of blocked event loop, and unverified TLS needs none."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS_CONTEXT = ctx
    return _TLS_CONTEXT


class Session:
    """One SMTP connection, as a client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def reply(self) -> Reply:
        parser = ReplyReader()
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except (TimeoutError, OSError, ValueError, asyncio.LimitOverrunError) as err:
                raise ConnectionDied(str(err) or type(err).__name__) from err
            if not line:
                raise ConnectionDied("connection closed")
            try:
                reply = parser.feed(line)
            except ReplyError as err:
                raise ConnectionDied(str(err)) from err
            if reply is not None:
                return reply

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (TimeoutError, OSError) as err:
            raise ConnectionDied(str(err) or type(err).__name__) from err

    async def command(self, line: str) -> Reply:
        await self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self.reply()

    async def starttls(self) -> None:
        try:
            await asyncio.wait_for(self.writer.start_tls(_tls_context()), self.timeout)
        except (TimeoutError, OSError, ssl.SSLError) as err:
            raise ConnectionDied(f"TLS handshake failed: {err}") from err

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (TimeoutError, OSError, ssl.SSLError):
            pass


def _said(reply: Reply) -> str:
    return "Remote host said: " + reply.text


async def _stream_data(session: Session, message: Path) -> None:
    chunk = bytearray()
    with open(message, "rb") as f:
        for line in dot_stuffed(f):
            chunk += line
            if len(chunk) >= DATA_CHUNK_BYTES:
                await session.send(bytes(chunk))
                chunk.clear()
    chunk += b".\r\n"
    await session.send(bytes(chunk))


async def _transaction(session: Session, host: str, cfg: RemoteSettings, sender: str,
                       recipient: str, message: Path, size: int, use_tls: bool) -> Result:
    """Greeting to end of DATA on an open connection; ConnectionDied escapes."""
    greeting = await session.reply()
    if greeting.code != 220:
        return deferral(f"Connected to {host} but greeting failed.\n{_said(greeting)}",
                        remote_mta=host, diagnostic=greeting.text)
    ehlo = await session.command(f"EHLO {cfg.helo}")
    keywords: set[str] = set()
    if ehlo.code == 250:
        keywords = ehlo.keywords()
    else:
        helo = await session.command(f"HELO {cfg.helo}")
        if helo.code != 250:
            return Result("failure" if helo.is_permanent else "deferral",
                          f"Connected to {host} but my name was rejected.\n{_said(helo)}",
                          remote_mta=host, diagnostic=helo.text)
    if use_tls and "STARTTLS" in keywords:
        reply = await session.command("STARTTLS")
        if reply.code == 220:
            await session.starttls()
            ehlo = await session.command(f"EHLO {cfg.helo}")
            if ehlo.code != 250:
                return deferral(f"Connected to {host} but my name was rejected after "
                                f"STARTTLS.\n{_said(ehlo)}", remote_mta=host,
                                diagnostic=ehlo.text)
            keywords = ehlo.keywords()
    wire_sender = "" if sender == DOUBLE_BOUNCE_SENDER else sender
    mail = f"MAIL FROM:<{wire_sender}>"
    if "SIZE" in keywords:
        mail += f" SIZE={size}"
    reply = await session.command(mail)
    if not reply.is_positive:
        return Result("failure" if reply.is_permanent else "deferral",
                      f"Connected to {host} but sender was rejected.\n{_said(reply)}",
                      remote_mta=host, diagnostic=reply.text)
    reply = await session.command(f"RCPT TO:<{recipient}>")
    if not reply.is_positive:
        text = f"{host} does not like recipient.\n{_said(reply)}\nGiving up on {host}."
        await _quit(session)
        return Result("failure" if reply.is_permanent else "deferral", text,
                      remote_mta=host, diagnostic=reply.text)
    reply = await session.command("DATA")
    if reply.code != 354:
        return Result("failure" if reply.is_permanent else "deferral",
                      f"{host} failed on DATA command.\n{_said(reply)}",
                      remote_mta=host, diagnostic=reply.text)
    await _stream_data(session, message)
    reply = await session.reply()
    await _quit(session)
    if reply.code // 100 == 2:
        return success(f"{host} accepted message.\n{_said(reply)}", remote_mta=host,
                       diagnostic=reply.text)
    return Result("failure" if reply.is_permanent else "deferral",
                  f"{host} failed after I sent the message.\n{_said(reply)}",
                  remote_mta=host, diagnostic=reply.text)


async def _quit(session: Session) -> None:
    try:
        await asyncio.wait_for(session.command("QUIT"), 5)
    except (ConnectionDied, TimeoutError):
        pass


async def _try_address(address: str, port: int, cfg: RemoteSettings, sender: str,
                       recipient: str, message: Path, size: int) -> Result | None:
    """The result at one address, or None when no connection could be made."""
    for use_tls in (True, False):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, limit=MAX_LINE_BYTES),
                cfg.connect_timeout)
        except (TimeoutError, OSError):
            return None
        session = Session(reader, writer, cfg.response_timeout)
        try:
            return await _transaction(session, address, cfg, sender, recipient, message,
                                      size, use_tls)
        except ConnectionDied as err:
            if use_tls and "TLS handshake failed" in str(err):
                continue  # opportunistic: try once more in clear
            return deferral(f"Connected to {address} but connection died. (#4.4.2)",
                            remote_mta=address)
        finally:
            await session.close()
    return None


async def deliver_remote(cfg: RemoteSettings, sender: str, recipient: str, message: Path,
                         size: int) -> Result:
    """Deliver `message` to one remote `recipient`; never raises for network trouble."""
    domain = recipient.rpartition("@")[2].lower()
    if not domain:
        return failure(f"Sorry, {recipient} has no domain. (#5.1.3)")
    route = route_for(cfg.routes, domain)
    try:
        if route.relay is not None:
            hosts = [MailHost(route.relay, await host_addresses(cfg.resolver, route.relay))]
        else:
            hosts = await mail_hosts(cfg.resolver, domain)
    except DnsError as err:
        return Result("deferral" if err.temporary else "failure", err.text, status=err.status)
    for host in hosts:
        for address in host.addresses:
            result = await _try_address(address, route.port, cfg, sender, recipient, message,
                                        size)
            if result is not None:
                return result
    return deferral("Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)",
                    status="4.4.1")
