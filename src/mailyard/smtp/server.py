"""The listeners of one SMTP service and the sessions they opened.

`SmtpServer` binds the ports, starts a `Conversation` per connection, counts them, and ends
them on shutdown. Bytes are moved by `wire`, sessions run in `conversation`; what to answer
is decided by `policy`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from ..logs import LogDir
from ..queue import Queue
from . import authchecks as A
from . import policy as P
from . import ratelimit as RL
from .conversation import TLS_HANDSHAKE_TIMEOUT, Conversation
from .directory import Directory
from .ratetable import RateTable
from .shared import SharedState
from .wire import Wire

if TYPE_CHECKING:
    from ..home import Home

# On shutdown, sessions in the middle of a message get this long to finish it; supervisord
# waits 15 s (STOP_WAIT_SECONDS) before it kills us.
SHUTDOWN_GRACE = 10.0
# Pending connections the kernel holds for us while we are busy (Postfix uses 100).
LISTEN_BACKLOG = 128

__all__ = ["SHUTDOWN_GRACE", "SmtpServer", "Wire", "bind"]


def bind(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets for `port` on `host` (None: every IPv4 and IPv6 address), made before
    the privilege drop (port 25 needs root) and before the workers are forked (they share
    them). IPv6 sockets are IPv6-only, so the IPv4 socket can have the port too."""
    sockets: list[socket.socket] = []
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                if family == socket.AF_INET6 and err.errno == errno.EADDRNOTAVAIL:  # no IPv6 here
                    sockets.pop().close()
                    continue
                raise
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SmtpServer:
    """One SMTP service (smtp, or submission with its smtps listener) and its sessions."""

    def __init__(self, home: Home, service: str, policy: P.Policy, settings: dict[str, Any],
                 log: LogDir, tls_context: ssl.SSLContext | None,
                 queue: Queue | None = None, directory: Directory | None = None,
                 shared: SharedState | None = None) -> None:
        self.home = home
        self.service = service
        self.policy = policy
        self.settings = settings
        self.auth_policy = A.AuthPolicy.from_settings(settings, service)
        self.log = log
        self.tls_context = tls_context
        self.queue = queue or Queue(home.queue_dir)
        self.directory = directory or Directory(home)
        # Counts and the AUTH throttle are the service's, shared by all its workers.
        self.shared = shared or SharedState()
        self.throttle = self.shared
        self.active = 0  # sessions of this process
        self.conversations: set[Conversation] = set()
        self.listeners: list[asyncio.Server] = []
        self.stopping = False
        self.limits = RL.Limits.from_settings(settings)
        self._rates: RateTable | None = None

    def reload(self, policy: P.Policy, settings: dict[str, Any]) -> None:
        """New settings for new connections (sessions under way keep theirs)."""
        self.policy = policy
        self.settings = settings
        self.auth_policy = A.AuthPolicy.from_settings(settings, self.service)
        self.limits = RL.Limits.from_settings(settings)

    def rates(self) -> RateTable:
        """The node's outbound rate counters, opened at first use (OSError when it cannot)."""
        if self._rates is None:
            self._rates = RateTable(self.home)
        return self._rates

    # ---- the connection count ----------------------------------------------------------------
    def connection_opened(self, ip: str) -> tuple[int, int]:
        """Count a new session; the sessions the service and this client address have open
        now, this one included (the second is 0 when the address could not be tracked)."""
        self.active += 1
        return self.shared.connection_opened(ip)

    def connection_closed(self, ip: str) -> None:
        self.active -= 1
        self.shared.connection_closed(ip)

    # ---- listening -------------------------------------------------------------------------------
    async def listen(self, sock: socket.socket, implicit_tls: bool = False) -> None:
        """Serve the listening socket `sock` (from `bind`)."""
        loop = asyncio.get_running_loop()
        if implicit_tls and self.tls_context is None:
            raise RuntimeError(f"{sock.getsockname()} needs TLS but no certificate could be loaded")

        def factory() -> Wire:
            return Wire(lambda wire: self._opened(wire, implicit_tls))

        server = await loop.create_server(
            factory, sock=sock, ssl=self.tls_context if implicit_tls else None,
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
