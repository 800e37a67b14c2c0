"""The thin asyncio driver: moves bytes between sockets, the protocol machine and the queue.

Everything it decides comes from `policy`; everything it parses comes from `protocol`. What
is left here is I/O: reading with the idle timeout, writing with flow control, the STARTTLS
switch, asking the store (through `directory`), streaming DATA into the queue and logging.

The STARTTLS switch is why this uses a Protocol and not streams: between the 220 and the
handshake, no byte the client sent in clear may survive, and with a Protocol the buffer is
ours to empty (`Wire.start_tls`), with no reader buffer of asyncio's in between.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..logs import LogDir
from ..queue import Envelope, Queue, QueueError
from . import policy as P
from . import replies as R
from .auth import Cancelled, Challenge, Credentials, Exchange, Malformed, start_exchange
from .directory import Directory, LookupFailed
from .events import (
    Auth,
    AuthResponse,
    BadInput,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Event,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from .protocol import ServerConnection, State
from .rbl import listing_zone
from .received import received_header

if TYPE_CHECKING:
    from ..home import Home

# Input buffered per connection before we stop reading from the socket (flow control); a
# client can never make us hold more than this plus one read.
READ_HIGH_WATER = 256 * 1024
# Seconds a TLS handshake may take (STARTTLS and implicit TLS), at most the session timeout.
TLS_HANDSHAKE_TIMEOUT = 60.0
# On shutdown, sessions in the middle of a message get this long to finish it; supervisord
# waits 15 s (STOP_WAIT_SECONDS) before it kills us.
SHUTDOWN_GRACE = 10.0

_session_ids = itertools.count(1)


class Wire(asyncio.Protocol):
    """The bytes of one connection, with flow control both ways."""

    def __init__(self, opened: Callable[[Wire], None]) -> None:
        self._opened = opened
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._arrived = asyncio.Event()
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._can_write: asyncio.Future[None] | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._opened(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._arrived.set()
        if len(self._buf) > READ_HIGH_WATER and self.transport and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._arrived.set()
        return None  # let the transport close its side

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._arrived.set()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    # ---- for the conversation --------------------------------------------------------------------
    @property
    def peer(self) -> tuple[str, int]:
        info = self.transport.get_extra_info("peername") if self.transport else None
        if not info:
            return "0.0.0.0", 0
        return str(info[0]), int(info[1])

    @property
    def lost(self) -> bool:
        return self._lost

    async def read(self, timeout: float) -> bytes:
        """Whatever has arrived (waiting up to `timeout` s for something); b"" at EOF."""
        if not self._buf and not self._eof:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)
        data = bytes(self._buf)
        self._buf.clear()
        if self._reading_paused and self.transport and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if data and self.transport and not self._lost and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if self._can_write is not None and not self._can_write.done():
            await asyncio.wait_for(asyncio.shield(self._can_write), timeout)

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Empty the clear-text input, then switch the transport to TLS (server side).

        Only what arrived *before* the switch is dropped (RFC 3207 4.2: clear text sent
        before the handshake counts for nothing). What arrives after it has come through TLS:
        a client may send its first command in the same flight as its Finished message, and
        the TLS layer hands us those bytes before `start_tls` returns, so they are kept."""
        assert self.transport is not None
        self._buf.clear()
        loop = asyncio.get_running_loop()
        # No await between emptying the buffer and start_tls pausing the transport, so no
        # clear-text byte can land in the buffer after it was emptied.
        new = await loop.start_tls(self.transport, self, context, server_side=True,
                                   ssl_handshake_timeout=timeout)
        if new is None:
            raise ConnectionError("TLS handshake did not complete")
        self.transport = new  # type: ignore[assignment]

    def close(self) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport:
            self.transport.abort()


class SmtpServer:
    """One SMTP service (smtp, or submission with its smtps listener) and its sessions."""

    def __init__(self, home: Home, service: str, policy: P.Policy, settings: dict[str, Any],
                 log: LogDir, tls_context: ssl.SSLContext | None,
                 queue: Queue | None = None, directory: Directory | None = None) -> None:
        self.home = home
        self.service = service
        self.policy = policy
        self.settings = settings
        self.log = log
        self.tls_context = tls_context
        self.queue = queue or Queue(home.queue_dir)
        self.directory = directory or Directory(home)
        self.throttle = P.AuthThrottle()
        self.active = 0
        self.conversations: set[Conversation] = set()
        self.listeners: list[asyncio.Server] = []
        self.stopping = False

    def reload(self, policy: P.Policy, settings: dict[str, Any]) -> None:
        """New settings for new connections (sessions under way keep theirs)."""
        self.policy = policy
        self.settings = settings

    async def listen(self, host: str | None, port: int, implicit_tls: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if implicit_tls and self.tls_context is None:
            raise RuntimeError(f"port {port} needs TLS but no certificate could be loaded")

        def factory() -> Wire:
            return Wire(lambda wire: self._opened(wire, implicit_tls))

        server = await loop.create_server(
            factory, host, port, reuse_address=True, backlog=128,
            ssl=self.tls_context if implicit_tls else None,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if implicit_tls else None)
        self.listeners.append(server)

    def _opened(self, wire: Wire, implicit_tls: bool) -> None:
        if self.stopping:
            wire.abort()
            return
        conversation = Conversation(self, wire, implicit_tls)
        self.conversations.add(conversation)
        conversation.task = asyncio.ensure_future(conversation.run())
        conversation.task.add_done_callback(lambda _t: self.conversations.discard(conversation))

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop listening; end idle sessions now, give those inside a message `grace` s."""
        self.stopping = True
        for server in self.listeners:
            server.close()
        deadline = time.monotonic() + grace
        while self.conversations and time.monotonic() < deadline:
            for conversation in list(self.conversations):
                if not conversation.in_message:  # idle now, or done with its message
                    conversation.cancel()
            await asyncio.sleep(0.05)
        for conversation in list(self.conversations):
            conversation.cancel()
        if self.conversations:
            await asyncio.wait([c.task for c in self.conversations if c.task], timeout=2)
        for server in self.listeners:
            await server.wait_closed()


class Conversation:
    """One client's session: the machine, its replies and its messages."""

    def __init__(self, server: SmtpServer, wire: Wire, implicit_tls: bool) -> None:
        self.server = server
        self.wire = wire
        self.policy = server.policy  # a snapshot: a reload does not change a session under way
        self.settings = server.settings
        self.ip, self.port = wire.peer
        self.id = f"{os.getpid()}.{next(_session_ids)}"
        self.conn = ServerConnection(self.ip, tls=implicit_tls)
        self.exchange: Exchange | None = None
        self.in_message = False
        self.task: asyncio.Future[None] | None = None
        self._out = bytearray()
        self._closing = False

    # ---- plumbing ----------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.server.log.write(f"{text} session={self.id}")

    def cancel(self) -> None:
        if self.task and not self.task.done():
            self.task.cancel()

    def _reply(self, reply: R.Reply, value: str = "", **kw: Any) -> None:
        self._out += self.conn.send(reply, **kw)
        self._note(reply, value)

    def _note(self, reply: R.Reply, value: str) -> None:
        if not reply.positive:
            self.log(f"reject ip={self.ip} rule={reply.name or 'OTHER'} "
                     f"value={value or '-'} reply={reply.short()}")

    async def _flush(self) -> None:
        if self._out:
            self.wire.write(bytes(self._out))
            self._out.clear()
        await self.wire.drain(self.policy.timeout)

    def _end(self, reply: R.Reply) -> None:
        self._out += self.conn.close(reply)
        self._closing = True

    async def _read(self) -> bool:
        """Flush, then feed the machine what arrives; False when the session must end."""
        await self._flush()
        try:
            data = await self.wire.read(self.policy.timeout)
        except TimeoutError:
            self.log(f"timeout ip={self.ip} after={self.policy.timeout}s "
                     f"state={self.conn.state.value}")
            self._end(R.TIMEOUT.format(hostname=self.policy.hostname))
            return False
        self.conn.receive_data(data)
        return True

    # ---- the session ------------------------------------------------------------------------------
    async def run(self) -> None:
        server = self.server
        server.active += 1
        started = time.monotonic()
        self.log(f"status: {server.active}/{self.policy.max_connections} "
                 f"connect ip={self.ip} port={self.port}")
        try:
            refusal = P.connection_refused(self.policy, server.active)
            if refusal:
                self.wire.write(self.conn.greet(refusal))
                self._note(refusal, f"{server.active}/{self.policy.max_connections}")
                return
            await self._greet()
            while not self._closing:
                event = self.conn.next_event()
                if event is None:
                    if self.conn.state is State.CLOSED or not await self._read():
                        break
                    continue
                await self._handle(event)
                if self.conn.too_many_errors and not self._closing:
                    self._end(R.TOO_MANY_ERRORS.format(hostname=self.policy.hostname))
                    self.log(f"too-many-errors ip={self.ip} errors={self.conn.session.errors}")
        except asyncio.CancelledError:
            self._out += bytes(R.SHUTTING_DOWN.format(hostname=self.policy.hostname))
            raise
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError) as exc:
            self.log(f"dropped ip={self.ip} error={type(exc).__name__}")
        except Exception as exc:  # a bug of ours: log it, end this session, keep serving
            self.log(f"error ip={self.ip} {type(exc).__name__}: {exc}")
            self._out += bytes(R.LOCAL_ERROR)
        finally:
            server.active -= 1
            if self._out:
                self.wire.write(bytes(self._out))
                self._out.clear()
            self.wire.close()
            self.log(f"end ip={self.ip} messages={self.conn.session.messages} "
                     f"seconds={time.monotonic() - started:.3f}")

    async def _greet(self) -> None:
        reply = P.greeting(self.policy)
        if P.rbl_applies(self.policy, self.conn.session):
            zone = await listing_zone(self.ip, self.policy.rbl_zones, self.policy.dns_resolver)
            if zone:
                reply = R.RBL_LISTED.format(ip=self.ip, zone=zone)
        self._out += self.conn.greet(reply)
        self._note(reply, self.ip)

    async def _handle(self, event: Event) -> None:
        policy, session = self.policy, self.conn.session
        if isinstance(event, BadInput):
            self._reply(event.reply, event.detail)
        elif isinstance(event, Ehlo):
            self._reply(P.ehlo_reply(policy, session))
        elif isinstance(event, Helo):
            self._reply(P.helo_reply(policy))
        elif isinstance(event, MailFrom):
            await self._mail_from(event)
        elif isinstance(event, RcptTo):
            await self._rcpt(event)
        elif isinstance(event, Data):
            await self._data()
        elif isinstance(event, (Rset, Noop, Help, Vrfy)):
            self._reply({Rset: R.RESET_OK, Noop: R.OK, Help: R.HELP,
                         Vrfy: R.CANNOT_VRFY}[type(event)])
        elif isinstance(event, Quit):
            self._reply(R.CLOSING.format(hostname=policy.hostname))
            self._closing = True
        elif isinstance(event, StartTls):
            await self._starttls()
        elif isinstance(event, Auth):
            refusal = P.auth_start_refusal(policy, session, event.mechanism)
            if refusal:
                self._reply(refusal, event.mechanism)
                return
            self.exchange = start_exchange(event.mechanism)
            assert self.exchange is not None
            await self._auth_step(self.exchange.start(event.initial))
        elif isinstance(event, AuthResponse):
            assert self.exchange is not None
            await self._auth_step(self.exchange.step(event.text))
        elif isinstance(event, ConnectionClosed):
            if event.in_data:
                self.log(f"cut-off ip={self.ip} the client left in the middle of DATA")
            self._closing = True
        else:  # DataChunk / EndOfData outside _data() would be a bug of ours
            raise RuntimeError(f"unexpected event {event!r}")

    async def _mail_from(self, event: MailFrom) -> None:
        policy, session = self.policy, self.conn.session
        reply, path = P.mail_from(policy, session, event.path, event.params)
        if path is not None and P.sender_check_needed(policy, session, path):
            try:
                alias_of_login, same_owner = await self.server.directory.sender_facts(
                    session.auth_user, P.plain_address(path))
            except LookupFailed as exc:
                self.log(f"store-error ip={self.ip} {exc}")
                self._reply(R.LOOKUP_ERROR.format(what="the sender"), str(event.path))
                return
            refusal = P.sender_login_refusal(policy, session, path,
                                             alias_of_login=alias_of_login,
                                             same_owner=same_owner)
            if refusal is not None:
                self._reply(refusal, f"{path} user={session.auth_user}")
                return
        self._reply(reply, str(event.path), accepted=path)

    async def _rcpt(self, event: RcptTo) -> None:
        policy, session = self.policy, self.conn.session
        checked = P.rcpt_precheck(policy, session, event.path, event.params)
        if isinstance(checked, R.Reply):
            self._reply(checked, str(event.path))
            return
        address = P.plain_address(checked)
        try:
            local, exists, active = await self.server.directory.recipient_facts(
                checked.domain, address)
            reply = P.rcpt_to(policy, session, checked, local_domain=local,
                              mailbox_exists=exists, mailbox_active=active)
            target = P.postmaster_target(policy, checked, local_domain=local,
                                         mailbox_exists=exists)
            if reply.positive and target is not None:  # postmaster@ ours: the named mailbox
                facts = await self.server.directory.recipient_facts(
                    target.domain, P.plain_address(target))
                reply = P.postmaster_reply(policy, target, local_domain=facts[0],
                                           mailbox_exists=facts[1], mailbox_active=facts[2])
                checked = target
        except LookupFailed as exc:
            self.log(f"store-error ip={self.ip} {exc}")
            self._reply(R.LOOKUP_ERROR.format(what="the recipient"), address)
            return
        self._reply(reply, address, accepted=checked)

    async def _starttls(self) -> None:
        reply = P.starttls_reply(self.policy, self.conn.session)
        if reply.code != 220 or self.server.tls_context is None:
            self._reply(reply if reply.code != 220 else R.TLS_NOT_AVAILABLE, "STARTTLS")
            return
        self._reply(reply)
        await self._flush()
        timeout = min(TLS_HANDSHAKE_TIMEOUT, float(self.policy.timeout))
        try:
            await self.wire.start_tls(self.server.tls_context, timeout)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.log(f"tls-failed ip={self.ip} error={type(exc).__name__}")
            self._closing = True
            self.conn.close(R.TLS_NOT_AVAILABLE)
            return
        self.conn.tls_started()

    async def _auth_step(self, step: Any) -> None:
        session = self.conn.session
        if isinstance(step, Challenge):
            self._reply(R.AUTH_CHALLENGE.format(challenge=step.text))
        elif isinstance(step, Cancelled):
            self._reply(R.AUTH_CANCELLED)
        elif isinstance(step, Malformed):
            self._reply(R.AUTH_MALFORMED.format(detail=step.detail), step.detail)
        elif isinstance(step, Credentials):
            user = step.username.strip().lower()
            try:
                ok = await self.server.directory.check_password(user, step.password)
            except LookupFailed as exc:
                self.log(f"store-error ip={self.ip} {exc}")
                self._reply(R.AUTH_TEMPORARY, user)
                return
            if ok:
                self.server.throttle.record_success(self.ip)
                session.auth_user = user
                self._reply(R.AUTH_OK)
                self.log(f"auth ip={self.ip} user={user} "
                         f"mechanism={self.exchange.mechanism if self.exchange else '?'}")
            else:
                delay = self.server.throttle.record_failure(self.ip)
                self.log(f"auth-failed ip={self.ip} user={user} "
                         f"failures={self.server.throttle.failures(self.ip)} delay={delay:g}s")
                await self._flush()
                await asyncio.sleep(delay)
                self._reply(R.AUTH_FAILED, user)
            self.exchange = None

    # ---- DATA -----------------------------------------------------------------------------------------
    async def _data(self) -> None:
        session = self.conn.session
        try:
            writer = self.server.queue.open_message()
        except QueueError as exc:
            self.log(f"queue-error ip={self.ip} {exc}")
            self._reply(_queue_reply(exc), "open")
            return
        self.in_message = True
        try:
            with writer:
                self._reply(R.START_DATA)
                recipients = _unique([P.plain_address(p) for p in session.recipients])
                header = received_header(
                    helo=session.helo, client_ip=self.ip, hostname=self.policy.hostname,
                    protocol=P.protocol_name(session),
                    recipient=recipients[0] if len(recipients) == 1 else None)
                await self._stream(writer, header, recipients)
        finally:
            self.in_message = False

    async def _stream(self, writer: Any, header: bytes, recipients: list[str]) -> None:
        policy, session = self.policy, self.conn.session
        failure: QueueError | None = None
        oversize = False
        size = 0
        try:
            writer.write(header)
        except QueueError as exc:
            failure = exc
        while True:
            event = self.conn.next_event()
            if event is None:
                if not await self._read():
                    return  # timeout: the writer is abandoned as the `with` block ends
                continue
            if isinstance(event, DataChunk):
                size += len(event.data)
                if failure or oversize:
                    continue
                if P.size_exceeded(policy, size):
                    oversize = True  # keep reading to the end, but store nothing more
                    writer.abandon()
                    continue
                try:
                    writer.write(event.data)
                except QueueError as exc:
                    failure = exc
                continue
            if isinstance(event, ConnectionClosed):
                self.log(f"cut-off ip={self.ip} the client left in the middle of DATA "
                         f"after {size} octets; nothing was queued")
                self._closing = True
                return
            assert isinstance(event, EndOfData), event
            break
        stats = event.stats
        sender = P.plain_address(session.sender) if session.sender else ""
        refusal = P.message_refusal(policy, stats.size, stats.longest_line, stats.received)
        if failure is not None:
            self.log(f"queue-error ip={self.ip} {failure}")
            self._reply(_queue_reply(failure), "write")
            return
        if refusal:
            self._reply(refusal, f"size={stats.size} longest_line={stats.longest_line} "
                                 f"received={stats.received}")
            return
        if policy.smtp_scanning:
            verdict = await self._filter(writer, sender, recipients)
            if verdict is not None:
                self._reply(verdict, f"from=<{sender}>")
                return
        envelope = Envelope(sender=sender, recipients=recipients, client_ip=self.ip,
                            helo=session.helo, auth_user=session.auth_user or None,
                            protocol=P.protocol_name(session))
        commit = asyncio.ensure_future(asyncio.to_thread(writer.commit, envelope))
        try:
            qid = await _uncancellable(commit)
        except QueueError as exc:
            self.log(f"queue-error ip={self.ip} {exc}")
            self._reply(_queue_reply(exc), "commit")
            return
        self._reply(R.QUEUED.format(qid=qid))
        rcpts = ",".join(f"<{r}>" for r in recipients)
        bare = f" bare_lf={stats.bare_lf} bare_cr={stats.bare_cr}" \
            if stats.bare_lf or stats.bare_cr else ""
        self.log(f"accepted qid={qid} size={writer.size} from=<{sender}> to={rcpts} "
                 f"ip={self.ip} protocol={P.protocol_name(session)}"
                 f"{' user=' + session.auth_user if session.auth_user else ''}{bare}")

    async def _filter(self, writer: Any, sender: str, recipients: list[str]) -> R.Reply | None:
        """SMTP-level SpamAssassin / ClamAV (only imported when a scanning setting is on)."""
        try:
            from ..filters.smtp_level import check_message

            verdict = await check_message(self.server.home, self.settings, writer.path, sender,
                                          recipients, self.ip)
        except Exception as exc:  # a filter failure delays mail, never loses or passes it
            self.log(f"filter-error ip={self.ip} {type(exc).__name__}: {exc}")
            return R.FILTER_ERROR
        if verdict is None:
            return None
        code, status, text = verdict
        return R.custom(code, status, text, "SMTP_FILTER")


async def _uncancellable(future: asyncio.Future[str]) -> str:
    """Wait for a commit even if the session is cancelled meanwhile (shutdown): the writer
    must not be abandoned while its commit runs in a thread. The cancellation is passed on
    once the commit has ended."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


def _queue_reply(exc: QueueError) -> R.Reply:
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return R.QUEUE_FULL
    return R.QUEUE_ERROR


def _unique(addresses: list[str]) -> list[str]:
    """Each recipient once, in the order given (RCPT twice for one address delivers once)."""
    seen: set[str] = set()
    out = []
    for address in addresses:
        key = address.lower()
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out
