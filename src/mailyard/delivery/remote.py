"""Remote delivery of one recipient over SMTP, with qmail-remote's reports.

Route or MX, then each address of each host in order until one answers. STARTTLS follows the
next hop's TLS policy (tls_policy.py; `may` by default: TLS when offered, certificate not
checked, clear text when the handshake fails; `encrypt` and `verify` defer rather than send in
clear). This node never delivers to itself (loops.py). A session that finished a transaction
is kept a moment for the next message to the same next hop and policy (conncache.py).
4xx and dead connections are deferrals, 5xx failures.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dns.asyncresolver

from ..mailauth.mtasts import PolicyCache, StsPolicy
from .conncache import ConnectionCache, Key
from .loops import LOOP_STATUS, Self, ehlo_names_me, hosts_better_than_me, loop_text
from .resolve import DnsError, MailHost, host_addresses, mail_hosts, make_resolver
from .result import Result, deferral, failure, success
from .routes import route_for
from .smtp_reply import Reply, ReplyError, ReplyReader, stuff_block
from .tls_policy import REQUIRED, describe, policy_for, unverified_context, verifying_context

# Bytes of a message read and dot-stuffed at a time (in a thread, off the event loop); a
# message up to this size is sent in one write.
DATA_CHUNK_BYTES = 1024 * 1024
# The longest reply line we read (RFC 5321 4.5.3.1.5 says 512; servers send more).
MAX_LINE_BYTES = 64 * 1024
# qmail's marker for the sender of a double bounce; on the wire it is the null sender.
DOUBLE_BOUNCE_SENDER = "#@[]"
# Seconds a QUIT may take when a session ends (qmail-remote does not wait for it at all).
QUIT_SECONDS = 5.0


class ConnectionDied(Exception):
    pass


class TlsFailed(ConnectionDied):
    """The TLS handshake (or the certificate check) failed."""


class StaleSession(Exception):
    """A cached session turned out closed before the transaction began."""


@dataclass
class RemoteSettings:
    helo: str
    routes: list[str]
    connect_timeout: float
    response_timeout: float
    resolver: dns.asyncresolver.Resolver
    me: Self
    tls_table: list[str]
    tls_default: str
    ca_file: str

    @classmethod
    def from_settings(cls, settings: dict[str, Any],
                      listener_ports: Iterable[int] = ()) -> RemoteSettings:
        hostname = str(settings["server.hostname"])
        return cls(helo=hostname,
                   routes=list(settings["send.smtp_routes"]),
                   connect_timeout=float(settings["send.connect_timeout"]),
                   response_timeout=float(settings["send.response_timeout"]),
                   resolver=make_resolver(str(settings["smtp.dns_resolver"])),
                   me=Self.make(hostname, str(settings.get("smtp.listen_address") or ""),
                                listener_ports, settings["send.own_addresses"]),
                   tls_table=list(settings["send.tls_policy"]),
                   tls_default=str(settings["send.tls_default_policy"]),
                   ca_file=str(settings["send.tls_ca_file"]))


def next_hop(routes: Iterable[str], recipient: str) -> str:
    """The destination that per-destination limits count: the route's relay, else the
    recipient's domain (Postfix's nexthop)."""
    domain = recipient.rpartition("@")[2].lower().rstrip(".")
    route = route_for(routes, domain)
    return f"{route.relay.lower()}:{route.port}" if route.relay is not None else domain


class Session:
    """One SMTP connection, as a client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.tls_version: str | None = None
        self.verified = False
        self.keywords: set[str] = set()

    async def reply(self) -> Reply:
        """One whole reply; the response timeout bounds all its lines together, so a server
        dribbling one line at a time cannot hold the session for lines x timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read_reply()
        except TimeoutError as err:
            raise ConnectionDied(f"no complete reply within {self.timeout:g} s") from err

    async def _read_reply(self) -> Reply:
        parser = ReplyReader()
        while True:
            try:
                line = await self.reader.readline()
            except (OSError, ValueError, asyncio.LimitOverrunError) as err:
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

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None,
                       verified: bool) -> None:
        try:
            await asyncio.wait_for(self.writer.start_tls(context,
                                                         server_hostname=server_hostname),
                                   self.timeout)
        except (TimeoutError, OSError, ssl.SSLError, ssl.CertificateError) as err:
            raise TlsFailed(f"TLS handshake failed: {err}") from err
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.tls_version = ssl_object.version() if ssl_object is not None else "TLS"
        self.verified = verified

    def alive(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (TimeoutError, OSError, ssl.SSLError):
            pass

    async def quit_and_close(self) -> None:
        if self.alive():
            try:
                await asyncio.wait_for(self.command("QUIT"), QUIT_SECONDS)
            except (ConnectionDied, TimeoutError):
                pass
        await self.close()


def _said(reply: Reply) -> str:
    return "Remote host said: " + reply.text


def _read_chunks(message: Path, prefix: bytes = b"") -> list[bytes]:
    """The message as DATA blocks: `prefix` (header fields we add on the way out, such as a
    DKIM signature), then the file; CRLF line endings, leading dots doubled, and the final
    dot line at the end. Each block ends at a line end, so stuffing them apart is exact."""
    out: list[bytes] = [stuff_block(prefix)] if prefix else []
    with open(message, "rb") as f:
        while True:
            block = f.read(DATA_CHUNK_BYTES)
            if not block:
                break
            if not block.endswith(b"\n"):
                block += f.readline()
            out.append(stuff_block(block))
    out.append(b".\r\n")
    return out


async def _stream_data(session: Session, message: Path, prefix: bytes = b"") -> None:
    for chunk in await asyncio.to_thread(_read_chunks, message, prefix):
        await session.send(chunk)


@dataclass(frozen=True)
class _Refused:
    """Opening a session at one address did not give one."""

    result: Result
    try_next: bool  # another address may do better (a TLS requirement not met there)


_LOOP = object()  # the server at this address named our own hostname in its EHLO reply


class RemoteClient:
    """Remote deliveries with their cache of open sessions; one per send service."""

    def __init__(self, cfg: RemoteSettings, sts: PolicyCache | None = None) -> None:
        self.cfg = cfg
        self.sts = sts  # MTA-STS policies of recipient domains (setting send.mta_sts)
        self.cache: ConnectionCache[Session] = ConnectionCache(Session.quit_and_close,
                                                               Session.alive)

    async def close(self) -> None:
        await self.cache.close_all()

    async def deliver(self, sender: str, recipient: str, message: Path, size: int,
                      prefix: bytes = b"") -> Result:
        """Deliver `message` to one remote `recipient`; never raises for network trouble."""
        return (await self.deliver_many(sender, [recipient], message, size, prefix))[0]

    async def deliver_many(self, sender: str, recipients: list[str], message: Path,
                           size: int, prefix: bytes = b"") -> list[Result]:
        """Deliver `message` (after `prefix`, header fields to put on top) to recipients of
        one next hop (same route, or same domain) in one transaction; one result per
        recipient, in order."""
        cfg = self.cfg
        domain = recipients[0].rpartition("@")[2].lower()
        route = route_for(cfg.routes, domain)
        sts: StsPolicy | None = None
        if domain and route.relay is None and self.sts is not None and \
                not policy_for(cfg.tls_table, "", domain, None):  # the table names it: it wins
            found, _how = await self.sts.policy(domain)
            if found is not None and found.mode == "enforce":
                sts = found
        results = await self._deliver_many(sender, recipients, message, size, prefix, sts)
        out = results if isinstance(results, list) else [results] * len(recipients)
        if sts is not None:
            note = (f"\nMTA-STS: {domain} enforces verified TLS to its MX hosts (policy "
                    f"{sts.policy_id}).")
            out = [r if r.kind == "success" else replace(r, text=r.text + note) for r in out]
        return out

    async def _deliver_many(self, sender: str, recipients: list[str], message: Path,
                            size: int, prefix: bytes,
                            sts: StsPolicy | None) -> Result | list[Result]:
        cfg = self.cfg
        domain = recipients[0].rpartition("@")[2].lower()
        if not domain:
            return failure(f"Sorry, {recipients[0]} has no domain. (#5.1.3)")
        route = route_for(cfg.routes, domain)
        level = "verify" if sts is not None else policy_for(cfg.tls_table, cfg.tls_default,
                                                            domain, route.relay)
        # A session that MTA-STS made verified is kept apart from one the table did.
        key: Key = (next_hop(cfg.routes, recipients[0]), route.port,
                    level + ("/mta-sts" if sts is not None else ""))
        cached = self.cache.take(key)
        if cached is not None:
            session, host, opened = cached
            try:
                results, reusable = await _transaction(session, str(host), sender, recipients,
                                                       message, size, reused=True,
                                                       prefix=prefix)
            except StaleSession:
                await session.close()
            except ConnectionDied:
                await session.close()
                return deferral(f"Connected to {host} but connection died. (#4.4.2)",
                                remote_mta=str(host))
            else:
                self._release(key, session, str(host), opened, reusable)
                return results
        try:
            if route.relay is not None:
                relay = MailHost(route.relay, await host_addresses(cfg.resolver, route.relay))
                if cfg.me.is_host_me(relay, route.port):
                    return failure(loop_text(domain), status=LOOP_STATUS)
                hosts = [relay]
            else:
                hosts = hosts_better_than_me(await mail_hosts(cfg.resolver, domain), cfg.me,
                                             route.port)
                if not hosts:
                    return failure(loop_text(domain), status=LOOP_STATUS)
                if sts is not None:
                    allowed = [h for h in hosts if sts.allows(str(h.name))]
                    if not allowed:
                        return deferral(
                            f"The MTA-STS policy of {domain} (mode enforce, id "
                            f"{sts.policy_id}) names none of its MX hosts "
                            f"({', '.join(str(h.name) for h in hosts)}). (#4.7.5)",
                            status="4.7.5")
                    hosts = allowed
        except DnsError as err:
            return Result("deferral" if err.temporary else "failure", err.text,
                          status=err.status)
        best = hosts[0].preference
        refused: Result | None = None
        for host in hosts:
            for address in host.addresses:
                opened_at = time.monotonic()
                attempt = await self._open(host, address, route.port, level)
                if attempt is None:
                    continue
                if attempt is _LOOP:
                    if route.relay is not None or host.preference == best:
                        return failure(loop_text(domain), status=LOOP_STATUS)
                    break  # a lesser MX that is us after all: try the next host
                if isinstance(attempt, _Refused):
                    if attempt.try_next:
                        refused = attempt.result
                        continue
                    return attempt.result
                assert isinstance(attempt, Session)
                try:
                    results, reusable = await _transaction(attempt, address, sender,
                                                           recipients, message, size,
                                                           reused=False, prefix=prefix)
                except (ConnectionDied, StaleSession):
                    await attempt.close()
                    return deferral(f"Connected to {address} but connection died. (#4.4.2)",
                                    remote_mta=address)
                self._release(key, attempt, address, opened_at, reusable)
                return results
        if refused is not None:
            return refused
        return deferral("Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)",
                        status="4.4.1")

    def _release(self, key: Key, session: Session, host: str, opened: float,
                 reusable: bool) -> None:
        if reusable and session.alive():
            self.cache.put(key, session, host, opened)
        else:
            task = asyncio.ensure_future(session.quit_and_close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _connect(self, address: str, port: int) -> Session | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, limit=MAX_LINE_BYTES),
                self.cfg.connect_timeout)
        except (TimeoutError, OSError):
            return None
        return Session(reader, writer, self.cfg.response_timeout)

    async def _open(self, host: MailHost, address: str, port: int,
                    level: str) -> Session | _Refused | object | None:
        """A session at `address` ready for MAIL under TLS policy `level`, or why not."""
        attempts = (True, False) if level == "may" else (level != "none",)
        for use_tls in attempts:
            session = await self._connect(address, port)
            if session is None:
                return None
            try:
                opened = await self._greet(session, host, address, level, use_tls)
            except TlsFailed as err:
                await session.close()
                if level == "may":
                    continue  # opportunistic: once more, in clear
                return _Refused(deferral(
                    f"TLS with {address} failed and the TLS policy for this destination is "
                    f"{level}: {err}. (#4.7.5)", remote_mta=address, status="4.7.5"), True)
            except ConnectionDied:
                await session.close()
                return _Refused(deferral(f"Connected to {address} but connection died. "
                                         "(#4.4.2)", remote_mta=address), False)
            if opened is not session:
                await session.quit_and_close()
            return opened
        return None

    async def _greet(self, session: Session, host: MailHost, address: str, level: str,
                     use_tls: bool) -> Session | _Refused | object:
        cfg = self.cfg
        greeting = await session.reply()
        if greeting.code != 220:
            return _Refused(deferral(f"Connected to {address} but greeting failed.\n"
                                     f"{_said(greeting)}", remote_mta=address,
                                     diagnostic=greeting.text), False)
        ehlo = await session.command(f"EHLO {cfg.helo}")
        if ehlo.code == 250:
            if ehlo_names_me(ehlo.lines, cfg.me):
                return _LOOP
            session.keywords = ehlo.keywords()
        else:
            helo = await session.command(f"HELO {cfg.helo}")
            if helo.code != 250:
                return _Refused(Result(
                    "failure" if helo.is_permanent else "deferral",
                    f"Connected to {address} but my name was rejected.\n{_said(helo)}",
                    remote_mta=address, diagnostic=helo.text), False)
            if ehlo_names_me(helo.lines, cfg.me):
                return _LOOP
        if not use_tls:
            return session
        if "STARTTLS" not in session.keywords:
            if level in REQUIRED:
                return _Refused(deferral(
                    f"{address} does not offer STARTTLS and the TLS policy for this "
                    f"destination is {level}. (#4.7.4)", remote_mta=address, status="4.7.4"),
                    True)
            return session
        reply = await session.command("STARTTLS")
        if reply.code != 220:
            if level in REQUIRED:
                return _Refused(deferral(
                    f"{address} refused STARTTLS and the TLS policy for this destination is "
                    f"{level}.\n{_said(reply)}", remote_mta=address, status="4.7.4",
                    diagnostic=reply.text), True)
            return session
        if level == "verify":
            try:
                context = verifying_context(cfg.ca_file)
            except (OSError, ssl.SSLError) as err:
                return _Refused(deferral(
                    f"Cannot load the CA file {cfg.ca_file or '(system store)'} that the TLS "
                    f"policy verify needs: {err}. (#4.7.5)", status="4.7.5"), False)
            await session.starttls(context, host.name, True)
        else:
            await session.starttls(unverified_context(), None, False)
        ehlo = await session.command(f"EHLO {cfg.helo}")
        if ehlo.code != 250:
            return _Refused(deferral(f"Connected to {address} but my name was rejected after "
                                     f"STARTTLS.\n{_said(ehlo)}", remote_mta=address,
                                     diagnostic=ehlo.text), False)
        if ehlo_names_me(ehlo.lines, cfg.me):
            return _LOOP
        session.keywords = ehlo.keywords()
        return session


async def _transaction(session: Session, host: str, sender: str, recipients: list[str],
                       message: Path, size: int, *, reused: bool,
                       prefix: bytes = b"") -> tuple[list[Result], bool]:
    """MAIL to the end of DATA on a session ready for it: a result per recipient, and whether
    the session is fit for another transaction. ConnectionDied escapes; StaleSession when a
    reused session was already closed before MAIL was answered."""
    wire_sender = "" if sender == DOUBLE_BOUNCE_SENDER else sender
    mail = f"MAIL FROM:<{wire_sender}>"
    if "SIZE" in session.keywords:
        mail += f" SIZE={size + len(prefix)}"
    try:
        reply = await session.command(mail)
    except ConnectionDied:
        if reused:
            raise StaleSession() from None
        raise
    if not reply.is_positive:
        return [Result("failure" if reply.is_permanent else "deferral",
                       f"Connected to {host} but sender was rejected.\n{_said(reply)}",
                       remote_mta=host, diagnostic=reply.text)] * len(recipients), False
    results: list[Result | None] = []
    for recipient in recipients:
        reply = await session.command(f"RCPT TO:<{recipient}>")
        if reply.is_positive:
            results.append(None)  # decided by the end of DATA
        else:
            results.append(Result(
                "failure" if reply.is_permanent else "deferral",
                f"{host} does not like recipient.\n{_said(reply)}\nGiving up on {host}.",
                remote_mta=host, diagnostic=reply.text))
    if all(r is not None for r in results):
        try:
            reusable = (await session.command("RSET")).code == 250
        except ConnectionDied:
            reusable = False  # the answers to RCPT stand; the session is simply not kept
        return [r for r in results if r is not None], reusable
    reply = await session.command("DATA")
    if reply.code != 354:
        outcome = Result("failure" if reply.is_permanent else "deferral",
                         f"{host} failed on DATA command.\n{_said(reply)}",
                         remote_mta=host, diagnostic=reply.text)
        return [r or outcome for r in results], False
    await _stream_data(session, message, prefix)
    reply = await session.reply()
    if reply.code // 100 == 2:
        outcome = success(f"{host} accepted message.\n{_said(reply)}\n"
                          f"{describe(session.tls_version, session.verified)}",
                          remote_mta=host, diagnostic=reply.text)
        return [r or outcome for r in results], True
    outcome = Result("failure" if reply.is_permanent else "deferral",
                     f"{host} failed after I sent the message.\n{_said(reply)}",
                     remote_mta=host, diagnostic=reply.text)
    return [r or outcome for r in results], False
