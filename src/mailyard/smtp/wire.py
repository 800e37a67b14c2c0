"""The bytes of one SMTP connection: reading with the idle timeout, writing with flow control,
and the STARTTLS switch.

This is an asyncio Protocol and not a stream pair because of STARTTLS: between the 220 and the
handshake no byte the client sent in clear may survive, and with a Protocol the buffer is ours
to empty (`Wire.start_tls`), with no reader buffer of asyncio's in between.

The idle timeout costs one timer per session, not one per read: each read moves a deadline
forward, and the timer, when it fires early, re-arms itself at the deadline instead of being
cancelled and created again for every line a client sends.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

# Input buffered per connection before we stop reading from the socket (flow control); a
# client can never make us hold more than this plus one read.
READ_HIGH_WATER = 256 * 1024


class Wire(asyncio.Protocol):
    """The bytes of one connection, with flow control both ways."""

    def __init__(self, opened: Callable[[Wire], None]) -> None:
        self._opened = opened
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._can_write: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for input
        self._deadline = 0.0  # loop time at which the waiting read times out
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        self._opened(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._wake()
        if len(self._buf) > READ_HIGH_WATER and self.transport and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None  # let the transport close its side

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._wake()
        self._stop_timer()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    # ---- the idle timer ------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no read is waiting; the next one arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._on_timer)
        else:
            waiter.set_exception(TimeoutError())

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- for the conversation --------------------------------------------------------------------
    @property
    def peer(self) -> tuple[str, int]:
        info = self.transport.get_extra_info("peername") if self.transport else None
        if not info:
            return "0.0.0.0", 0
        return str(info[0]), int(info[1])

    @property
    def tls_version(self) -> str:
        """The TLS protocol of the connection (`TLSv1.3`), or "" in clear text."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        return (ssl_object.version() or "") if ssl_object is not None else ""

    @property
    def lost(self) -> bool:
        return self._lost

    async def read(self, timeout: float) -> bytes:
        """Whatever has arrived (waiting up to `timeout` s for something); b"" at EOF."""
        if not self._buf and not self._eof:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._on_timer)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
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
        self.transport = new

    def close(self) -> None:
        self._stop_timer()
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._stop_timer()
        if self.transport:
            self.transport.abort()
