"""Asking clamd about one message over its INSTREAM command, with a hard timeout.

Our own client, about sixty lines, rather than aioclamd 1.1 or clamav-client 0.7: the message
lives in a spool file and we stream it from there in chunks, stop before clamd's
StreamMaxLength instead of learning about it from a closed socket, and need every failure
folded into one exception, because the SMTP rule for all of them is the same (4xx, retry).
Protocol: "zINSTREAM\\0", then chunks each preceded by a 4-byte big-endian length, then a
zero length; clamd answers "stream: OK", "stream: NAME FOUND" or "... ERROR", NUL-ended.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

# Chunk size for INSTREAM: clamd reads each chunk into its buffer; 64 KiB keeps memory small
# on both sides and the number of writes low (clamdscan uses the same order of size).
CHUNK_BYTES = 64 * 1024
# clamd's answers are one short line; anything longer is not clamd.
MAX_REPLY_BYTES = 4096


class ClamdUnavailable(Exception):
    """clamd did not give a verdict (down, too slow, or an error)."""


class StreamTooLong(Exception):
    """The message is longer than clamd accepts in one stream (StreamMaxLength)."""


@dataclass(frozen=True)
class ScanResult:
    infected: bool
    signature: str | None  # the name clamd reported when infected


def parse_reply(reply: bytes) -> ScanResult:
    """Turn clamd's reply to INSTREAM into a result; raise for errors."""
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace")
    if text.endswith(" FOUND"):
        _, _, rest = text.partition(": ")
        return ScanResult(True, rest[: -len(" FOUND")].strip() or "unknown")
    if text.endswith(": OK"):
        return ScanResult(False, None)
    if "size limit exceeded" in text:
        raise StreamTooLong(text)
    raise ClamdUnavailable(f"clamd answered {text!r}")


async def _send_stream(loop: asyncio.AbstractEventLoop, sock: socket.socket, path: Path
                       ) -> None:
    # The command rides with the first chunk and the end marker with the last, so a
    # typical message goes out in one write instead of three small ones.
    pending = b"zINSTREAM\0"
    end = struct.pack("!I", 0)
    with path.open("rb") as f:
        chunk = f.read(CHUNK_BYTES)
        while chunk:
            following = f.read(CHUNK_BYTES)
            await loop.sock_sendall(sock, pending + struct.pack("!I", len(chunk)) + chunk
                                    + (b"" if following else end))
            pending = b""
            chunk = following
    if pending:  # an empty file: the command and the end marker alone
        await loop.sock_sendall(sock, pending + end)


async def _read_reply(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    reply = b""
    while not reply.endswith(b"\0"):
        data = await loop.sock_recv(sock, MAX_REPLY_BYTES)
        if not data:
            raise ClamdUnavailable("clamd closed the connection without an answer")
        reply += data
        if len(reply) > MAX_REPLY_BYTES:
            raise ClamdUnavailable("clamd's reply is too long")
    return reply


async def _instream(clamd_socket: Path, path: Path, max_stream: int) -> ScanResult:
    """INSTREAM over the unix socket, on the bare socket rather than a stream transport:
    when a stream passes clamd's limit, clamd answers and closes while we are still
    writing, and our next write fails at once (EPIPE). A transport would drop the answer
    with the connection; the socket still hands it over (the kernel queues it before the
    error), so the caller learns that the message is too big, not that clamd is down."""
    size = path.stat().st_size
    if max_stream and size > max_stream:
        raise StreamTooLong(f"{size} bytes is over clamd's stream limit of {max_stream}")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await loop.sock_connect(sock, str(clamd_socket))
        except OSError as exc:
            raise ClamdUnavailable(f"cannot connect to clamd at {clamd_socket}: {exc}") from exc
        try:
            try:
                await _send_stream(loop, sock, path)
            except (BrokenPipeError, ConnectionResetError):
                pass  # clamd stopped reading: its answer says why (read just below)
            return parse_reply(await _read_reply(loop, sock))
        except OSError as exc:
            raise ClamdUnavailable(f"clamd failed during the scan: {exc}") from exc
    finally:
        sock.close()


async def scan_file(clamd_socket: Path, path: Path, timeout: float, max_stream: int = 0
                    ) -> ScanResult:
    """Scan the file at `path` with clamd at its unix socket; 0 for max_stream: no check."""
    try:
        return await asyncio.wait_for(_instream(clamd_socket, path, max_stream), timeout)
    except TimeoutError as exc:
        raise ClamdUnavailable(f"clamd gave no answer within {timeout:g} s") from exc


async def ping(clamd_socket: Path, timeout: float = 5.0) -> bool:
    """True when clamd answers PING with PONG."""
    async def _ping() -> bool:
        reader, writer = await asyncio.open_unix_connection(str(clamd_socket))
        try:
            writer.write(b"zPING\0")
            await writer.drain()
            return (await reader.readuntil(b"\0")).rstrip(b"\0") == b"PONG"
        finally:
            writer.close()
    try:
        return await asyncio.wait_for(_ping(), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return False
