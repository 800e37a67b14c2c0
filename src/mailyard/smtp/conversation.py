"""One client's SMTP session: the read loop, and one handler per event the machine reports.

It moves bytes between the wire and the machine (`protocol`), asks the store through
`directory`, streams DATA into the queue through `transaction` and writes the log lines of
`loglines`. Every reply it sends comes from `policy`; it decides nothing itself and reads no
setting (the settings it holds are passed through to the SMTP-level filters).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..mailauth.inbound import SpfResult
from ..queue import Envelope, QueueError
from . import authchecks as A
from . import loglines as L
from . import policy as P
from . import ratelimit as RL
from .auth import Cancelled, Challenge, Credentials, Exchange, Malformed, start_exchange
from .directory import LookupFailed
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
from .ratetable import on_over_limit
from .rbl import listing_zone
from .received import received_header
from .replies import Reply
from .transaction import Incoming
from .wire import Wire

if TYPE_CHECKING:
    from .server import SmtpServer

# Seconds a TLS handshake may take (STARTTLS and implicit TLS), at most the session timeout.
TLS_HANDSHAKE_TIMEOUT = 60.0

_session_ids = itertools.count(1)


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
        self.incoming: Incoming | None = None  # the message of a DATA under way
        self.started = self.data_started = time.monotonic()
        self.auth_policy = server.auth_policy
        # Mail authentication of the transaction under way (set at MAIL FROM): the SPF result
        # and whether its recipients are DMARC-exempt (None before the first one).
        self.spf: SpfResult | None = None
        self.auth_group: bool | None = None
        self.in_message = False
        # Outbound rate limits of the transaction under way: who it counts for (found at the
        # first remote recipient), the counts read then, and its remote recipients.
        self.rate_sender: RL.Sender | None = None
        self.rate_buckets: tuple[list[RL.Bucket], list[RL.Bucket]] = ([], [])
        self.remote: set[str] = set()
        self.task: asyncio.Future[None] | None = None
        self._out = bytearray()
        self._closing = False

    # ---- plumbing ----------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.server.log.write(L.session(text, self.id))

    def cancel(self) -> None:
        if self.task and not self.task.done():
            self.task.cancel()

    def _reply(self, reply: Reply, value: str = "", **kw: Any) -> None:
        sender = self.conn.session.sender  # before `send`: the end of DATA resets it
        self._out += self.conn.send(reply, **kw)
        if not reply.positive:
            self.log(L.reject(self.ip, reply, value,
                              P.plain_address(sender) if sender is not None else None))

    async def _flush(self) -> None:
        if self._out:
            self.wire.write(bytes(self._out))
            self._out.clear()
        await self.wire.drain(self.policy.timeout)

    def _end(self, reply: Reply) -> None:
        self._out += self.conn.close(reply)
        self._closing = True

    async def _read(self) -> bool:
        """Flush, then feed the machine what arrives; False when the session must end."""
        await self._flush()
        now = time.monotonic()
        wait = P.read_timeout(self.policy, now - self.started)
        if wait <= 0:
            self.log(L.session_too_long(self.ip, self.policy.session_lifetime))
            self._end(P.session_too_long_reply(self.policy))
            return False
        try:
            data = await self.wire.read(wait)
        except TimeoutError:
            if wait < self.policy.timeout:  # the lifetime, not the idle timeout, ran out
                self.log(L.session_too_long(self.ip, self.policy.session_lifetime))
                self._end(P.session_too_long_reply(self.policy))
                return False
            self.log(L.timeout(self.ip, self.policy.timeout, self.conn.state.value))
            self._end(P.timeout_reply(self.policy))
            return False
        if self.incoming is not None:
            slow = P.data_too_slow(self.policy, time.monotonic() - self.data_started,
                                   self.incoming.size + len(data))
            if slow is not None:
                self.log(L.reject(self.ip, slow, f"{self.incoming.size} octets"))
                self._end(slow)
                return False
        self.conn.receive_data(data)
        return True

    # ---- the session: one read loop ------------------------------------------------------------------
    async def run(self) -> None:
        server = self.server
        active, from_client = server.connection_opened(self.ip)
        started = self.started = time.monotonic()
        self.log(L.connect(active, self.policy.max_connections, self.ip, self.port))
        try:
            refusal = P.connection_refused(self.policy, active)
            value = f"{active}/{self.policy.max_connections}"
            if refusal is None:
                refusal = P.client_connection_refused(self.policy, self.conn.session,
                                                      from_client)
                value = f"{from_client}/{P.client_connection_cap(self.policy)}"
            if refusal:
                self.wire.write(self.conn.greet(refusal))
                self.log(L.reject(self.ip, refusal, value))
                return
            await self._greet()
            while not self._closing:
                event = self.conn.next_event()
                if event is None:
                    if self.conn.state is State.CLOSED or not await self._read():
                        break
                    continue
                await _HANDLERS[type(event)](self, event)
                if self.conn.too_many_errors and not self._closing:
                    self._end(P.too_many_errors_reply(self.policy))
                    self.log(L.too_many_errors(self.ip, self.conn.session.errors))
        except asyncio.CancelledError:
            self._out += bytes(P.shutdown_reply(self.policy))
            raise
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError) as exc:
            self.log(L.dropped(self.ip, exc))
        except Exception as exc:  # a bug of ours: log it, end this session, keep serving
            self.log(L.internal_error(self.ip, exc))
            self._out += bytes(P.local_error_reply())
        finally:
            self._drop_message()  # a message not committed is removed (timeout, cut-off, bug)
            server.connection_closed(self.ip)
            if self._out:
                self.wire.write(bytes(self._out))
                self._out.clear()
            self.wire.close()
            self.log(L.end(self.ip, self.conn.session.messages, time.monotonic() - started))

    async def _greet(self) -> None:
        reply = P.greeting(self.policy)
        if P.rbl_applies(self.policy, self.conn.session):
            zone = await listing_zone(self.ip, self.policy.rbl_zones, self.policy.dns_resolver)
            if zone:
                reply = P.rbl_reply(self.ip, zone)
        self._out += self.conn.greet(reply)
        if not reply.positive:
            self.log(L.reject(self.ip, reply, self.ip))

    # ---- one handler per command ---------------------------------------------------------------------
    async def _on_bad_input(self, event: BadInput) -> None:
        self._reply(event.reply, event.detail)

    async def _on_ehlo(self, event: Ehlo) -> None:
        self._reply(P.ehlo_reply(self.policy, self.conn.session))

    async def _on_helo(self, event: Helo) -> None:
        self._reply(P.helo_reply(self.policy))

    async def _on_mail(self, event: MailFrom) -> None:
        policy, session = self.policy, self.conn.session
        reply, path = P.mail_from(policy, session, event.path, event.params)
        if path is not None and P.sender_check_needed(policy, session, path):
            try:
                alias_of_login, same_owner = await self.server.directory.sender_facts(
                    session.auth_user, P.plain_address(path))
            except LookupFailed as exc:
                self.log(L.store_error(self.ip, exc))
                self._reply(P.lookup_error_reply("the sender"), str(event.path))
                return
            refusal = P.sender_login_refusal(policy, session, path,
                                             alias_of_login=alias_of_login,
                                             same_owner=same_owner)
            if refusal is not None:
                self._reply(refusal, f"{path} user={session.auth_user}")
                return
        self.spf, self.auth_group = None, None  # MAIL starts a transaction
        self.rate_sender, self.remote = None, set()
        if path is not None and reply.positive and A.applies(
                self.auth_policy, P.may_relay(policy, session), bool(session.auth_user)):
            try:
                self.spf = await A.spf_of(self.auth_policy, self.ip, P.plain_address(path),
                                          session.helo)
            except Exception as exc:  # a check that breaks never stops the mail
                self.log(L.mail_auth_error(self.ip, exc))
        self._reply(reply, str(event.path), accepted=path)

    async def _on_rcpt(self, event: RcptTo) -> None:
        policy, session = self.policy, self.conn.session
        checked = P.rcpt_precheck(policy, session, event.path, event.params)
        if isinstance(checked, Reply):
            self._reply(checked, str(event.path))
            return
        address = P.plain_address(checked)
        if self.spf is not None:
            refusal = A.spf_refusal(self.auth_policy, self.spf, self.ip)
            if refusal is None:
                refusal, group = A.recipient_group(self.auth_policy, self.auth_group,
                                                   checked.domain)
            if refusal is not None:
                self._reply(refusal, address)
                return
        directory = self.server.directory
        try:
            local, exists, active = await directory.recipient_facts(checked.domain, address)
            if not exists and P.srs_candidate(policy, checked) and \
                    await directory.srs_valid(address):
                local = exists = True  # a bounce of mail we forwarded: back to its sender
            reply = P.rcpt_to(policy, session, checked, local_domain=local,
                              mailbox_exists=exists, mailbox_active=active)
            target = P.postmaster_target(policy, checked, local_domain=local,
                                         mailbox_exists=exists)
            if reply.positive and target is not None:  # postmaster@ ours: the named mailbox
                facts = await directory.recipient_facts(target.domain, P.plain_address(target))
                reply = P.postmaster_reply(policy, target, local_domain=facts[0],
                                           mailbox_exists=facts[1], mailbox_active=facts[2])
                checked = target
            if reply.positive and local and exists:
                limit, used = await directory.quota_use(P.plain_address(checked))
                reply = P.quota_refusal(P.plain_address(checked), limit, used) or reply
        except LookupFailed as exc:
            self.log(L.store_error(self.ip, exc))
            self._reply(P.lookup_error_reply("the recipient"), address)
            return
        if reply.positive and not local:
            refusal = await self._rate_check(address)
            if refusal is not None:
                self._reply(refusal, address)
                return
        if self.spf is not None and reply.positive:
            self.auth_group = group
        self._reply(reply, address, accepted=checked)

    # ---- outbound rate limits ------------------------------------------------------------------
    async def _rate_check(self, address: str) -> Reply | None:
        """At a remote recipient: the 451 when one more message (or recipient) of this
        sender would pass a limit. The counts are read once per transaction (at its first
        remote recipient); port 25 inbound mail never gets here with a sender to count."""
        server, session = self.server, self.conn.session
        kind = P.rate_limited_client(self.policy, session)
        if not kind or not server.limits.any or address.lower() in self.remote:
            return None
        if self.rate_sender is None:
            try:
                self.rate_sender = await self._find_rate_sender(kind)
                self.rate_buckets = server.rates().buckets(self.rate_sender)
            except LookupFailed as exc:
                self.log(L.store_error(self.ip, exc))
                return P.lookup_error_reply("the sender's limits")
            except OSError as exc:  # a broken counter file never stops the mail; it is logged
                self.log(L.rate_table_error(self.ip, exc))
                self.rate_sender = RL.Sender("")
        if not self.rate_sender.key:
            return None
        found = RL.over_now(server.limits, self.rate_sender, *self.rate_buckets,
                            now=time.time(), recipients_so_far=len(self.remote))
        if found is not None:
            self._over_limit(found)
            return P.rate_limit_reply(found)
        self.remote.add(address.lower())
        return None

    async def _find_rate_sender(self, kind: str) -> RL.Sender:
        session, directory = self.conn.session, self.server.directory
        if kind == "mailbox":
            facts = await directory.recipient(session.auth_user)
            override = facts.mailbox.messages_per_hour if facts.mailbox else None
            return RL.mailbox_sender(session.auth_user, override)
        domain = session.sender.domain.lower() if session.sender else ""
        if domain and not await directory.is_local_domain(domain):
            domain = ""
        return RL.ip_sender(self.ip, domain)

    def _over_limit(self, found: RL.Verdict) -> None:
        try:
            self.server.rates().note_refused(found)
            on_over_limit(self.server.home, found.key, found, self.server.limits, self.log)
        except OSError as exc:
            self.log(L.rate_table_error(self.ip, exc))

    def _charge(self) -> Reply | None:
        """At the end of DATA, before the commit: count the message, or the 451 when it no
        longer fits (another session of the sender took the last place meanwhile)."""
        if self.rate_sender is None or not self.rate_sender.key or not self.remote:
            return None
        try:
            found = self.server.rates().charge(self.server.limits, self.rate_sender,
                                               len(self.remote))
        except OSError as exc:
            self.log(L.rate_table_error(self.ip, exc))
            return None
        if found is None:
            return None
        try:
            on_over_limit(self.server.home, found.key, found, self.server.limits, self.log)
        except OSError as exc:
            self.log(L.rate_table_error(self.ip, exc))
        return P.rate_limit_reply(found)

    async def _on_simple(self, event: Rset | Noop | Help | Vrfy) -> None:
        self._reply(P.simple_reply(event.verb))

    async def _on_quit(self, event: Quit) -> None:
        self._reply(P.quit_reply(self.policy))
        self._closing = True

    async def _on_closed(self, event: ConnectionClosed) -> None:
        if event.in_data:
            size = self.incoming.size if self.incoming is not None else None
            self.log(L.cut_off(self.ip, size))
        self._closing = True

    async def _on_starttls(self, event: StartTls) -> None:
        tls = self.server.tls_context
        reply = P.starttls_decision(self.policy, self.conn.session, tls is not None)
        if reply.code != 220 or tls is None:
            self._reply(reply, "STARTTLS")
            return
        self._reply(reply)
        await self._flush()
        timeout = min(TLS_HANDSHAKE_TIMEOUT, float(self.policy.timeout))
        try:
            await self.wire.start_tls(tls, timeout)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.log(L.tls_failed(self.ip, exc))
            self._closing = True
            self.conn.close(P.tls_failed_reply())
            return
        self.conn.tls_started()

    # ---- AUTH --------------------------------------------------------------------------------------
    async def _on_auth(self, event: Auth) -> None:
        refusal = P.auth_start_refusal(self.policy, self.conn.session, event.mechanism)
        if refusal:
            self._reply(refusal, event.mechanism)
            return
        self.exchange = start_exchange(event.mechanism)
        assert self.exchange is not None
        await self._auth_step(self.exchange.start(event.initial))

    async def _on_auth_response(self, event: AuthResponse) -> None:
        assert self.exchange is not None
        await self._auth_step(self.exchange.step(event.text))

    async def _auth_step(self, step: Any) -> None:
        if isinstance(step, Challenge):
            self._reply(P.auth_challenge_reply(step.text))
        elif isinstance(step, Cancelled):
            self._reply(P.auth_cancelled_reply())
        elif isinstance(step, Malformed):
            self._reply(P.auth_malformed_reply(step.detail), step.detail)
        elif isinstance(step, Credentials):
            await self._check_credentials(step)

    async def _check_credentials(self, step: Credentials) -> None:
        user = P.auth_username(step.username)
        mechanism = self.exchange.mechanism if self.exchange else "?"
        self.exchange = None
        try:
            ok = await self.server.directory.check_password(user, step.password)
        except LookupFailed as exc:
            self.log(L.store_error(self.ip, exc))
            self._reply(P.auth_temporary_reply(), user)
            return
        throttle = self.server.throttle
        if ok:
            throttle.record_success(self.ip)
            self._reply(P.auth_result_reply(True), user=user)  # the machine signs the user in
            self.log(L.auth_ok(self.ip, user, mechanism))
            return
        delay = throttle.record_failure(self.ip)
        self.log(L.auth_failed(self.ip, user, throttle.failures(self.ip), delay))
        await self._flush()
        await asyncio.sleep(delay)
        self._reply(P.auth_result_reply(False), user)

    # ---- DATA, inside the same read loop -------------------------------------------------------------
    async def _on_data(self, event: Data) -> None:
        session = self.conn.session
        recipients = P.unique_recipients(session.recipients)
        try:
            incoming = Incoming(self.server.queue, self.policy, recipients)
        except QueueError as exc:
            self.log(L.queue_error(self.ip, exc))
            self._reply(P.queue_failure_reply(exc.__cause__), "open")
            return
        self.incoming = incoming
        self.data_started = time.monotonic()
        self.in_message = True
        self._reply(P.start_data_reply())
        header = received_header(
            helo=session.helo, client_ip=self.ip, hostname=self.policy.hostname,
            protocol=P.protocol_name(session),
            recipient=recipients[0] if len(recipients) == 1 else None)
        try:
            incoming.writer.write(header)
        except QueueError as exc:
            incoming.failure = exc

    async def _on_data_chunk(self, event: DataChunk) -> None:
        assert self.incoming is not None
        self.incoming.write(event.data)

    async def _on_end_of_data(self, event: EndOfData) -> None:
        incoming = self.incoming
        assert incoming is not None
        try:
            await self._finish_message(incoming, event)
        finally:
            self._drop_message()

    def _drop_message(self) -> None:
        if self.incoming is not None:
            self.incoming.abandon()
            self.incoming = None
        self.in_message = False

    async def _finish_message(self, incoming: Incoming, event: EndOfData) -> None:
        policy, session = self.policy, self.conn.session
        stats = event.stats
        sender = P.plain_address(session.sender) if session.sender else ""
        recipients = incoming.recipients
        if incoming.failure is not None:
            self.log(L.queue_error(self.ip, incoming.failure))
            self._reply(P.queue_failure_reply(incoming.failure.__cause__), "write")
            return
        refusal = P.message_refusal(policy, stats.size, stats.longest_line, stats.received)
        if refusal:
            self._reply(refusal, f"size={stats.size} longest_line={stats.longest_line} "
                                 f"received={stats.received}")
            return
        verdicts: list[str] = []  # what the SMTP-level filters found, for the log
        if policy.smtp_scanning:
            verdict = await self._filter(incoming, sender, recipients, verdicts)
            if verdict is not None:
                self._reply(verdict, f"from=<{sender}>")
                return
        extra: dict[str, Any] = {}
        if self.spf is not None:
            refusal, extra = await self._authenticate(incoming, self.spf)
            if refusal is not None:
                self._reply(refusal, f"from=<{sender}>")
                return
        refusal = self._charge()
        if refusal is not None:
            self._reply(refusal, f"from=<{sender}>")
            return
        protocol = P.protocol_name(session)
        envelope = Envelope(sender=sender, recipients=recipients, client_ip=self.ip,
                            helo=session.helo, auth_user=session.auth_user or None,
                            protocol=protocol, extra=extra)
        try:
            qid = await incoming.commit(envelope)
        except QueueError as exc:
            self.log(L.queue_error(self.ip, exc))
            self._reply(P.queue_failure_reply(exc.__cause__), "commit")
            return
        self._reply(P.queued_reply(qid))
        self.log(L.accepted(qid, incoming.writer.size, sender, recipients, self.ip, protocol,
                            session.auth_user, stats.bare_lf, stats.bare_cr,
                            tls=self.wire.tls_version, helo=session.helo,
                            msgid=incoming.header.message_id, filters=",".join(verdicts)))
        # The record of an accepted message goes to the log's writer before the client can
        # see its 250 (the reply is only buffered so far); other lines may wait a moment in
        # a worker (LogPipe).
        self.server.log.flush()

    async def _authenticate(self, incoming: Incoming,
                            spf: SpfResult) -> tuple[Reply | None, dict[str, Any]]:
        """DKIM and DMARC of the message, on top of the SPF found at MAIL FROM: a refusal
        (DMARC p=reject), or what the envelope carries to delivery (the
        Authentication-Results field, a quarantine)."""
        try:
            verdict = await A.run_checks(self.auth_policy, str(incoming.writer.path), spf)
        except Exception as exc:  # a check that breaks never stops the mail
            self.log(L.mail_auth_error(self.ip, exc))
            return None, {}
        refusal, extra = A.outcome(self.auth_policy, verdict, bool(self.auth_group))
        action = "reject" if refusal else ("quarantine" if A.QUARANTINE_KEY in extra
                                           else "accept")
        self.log(L.mail_auth(self.ip, verdict.spf.result,
                             ",".join(f"{r.result}:{r.domain}" for r in verdict.dkim),
                             verdict.dmarc.result, verdict.dmarc.policy, action))
        return refusal, extra

    async def _filter(self, incoming: Incoming, sender: str, recipients: list[str],
                      verdicts: list[str] | None = None) -> Reply | None:
        """SMTP-level SpamAssassin / ClamAV. Imported here, not at the top, so that a node
        without scanning does not load the filters (the service preloads them before dropping
        root, so the import works after the drop)."""
        try:
            from ..filters.smtp_level import check_message

            verdict = await check_message(self.server.home, self.settings,
                                          incoming.writer.path, sender, recipients, self.ip,
                                          verdicts=verdicts)
        except Exception as exc:  # a filter failure delays mail, never loses or passes it
            self.log(L.filter_error(self.ip, exc))
            return P.filter_error_reply()
        return verdict  # a named entry of the reply table: the log says which filter rule


# One handler per event the machine reports (a table of the class, not made per session).
_HANDLERS: dict[type[Event], Callable[[Conversation, Any], Awaitable[None]]] = {
    BadInput: Conversation._on_bad_input, Ehlo: Conversation._on_ehlo,
    Helo: Conversation._on_helo, MailFrom: Conversation._on_mail, RcptTo: Conversation._on_rcpt,
    Data: Conversation._on_data, DataChunk: Conversation._on_data_chunk,
    EndOfData: Conversation._on_end_of_data, Rset: Conversation._on_simple,
    Noop: Conversation._on_simple, Help: Conversation._on_simple, Vrfy: Conversation._on_simple,
    Quit: Conversation._on_quit, StartTls: Conversation._on_starttls,
    Auth: Conversation._on_auth, AuthResponse: Conversation._on_auth_response,
    ConnectionClosed: Conversation._on_closed,
}
