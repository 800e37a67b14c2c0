"""The strict CRLF line reader for commands and the DATA dot-unstuffer (sans-io).

Only the two octets CR LF end a line. A bare LF or a bare CR is an ordinary octet inside a
line, so `\\n.\\n`, `\\r.\\r` or `\\n.\\r\\n` can never end a message: the SMTP smuggling of
CVE-2023-51764 (Postfix) and CVE-2024-27305 (aiosmtpd) has nothing to hold on to here.
Neither class ever holds more than its limit plus one read's worth of input.
"""

from __future__ import annotations

from dataclasses import dataclass

CRLF = b"\r\n"

# RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
MAX_COMMAND_LINE = 512
# RFC 4954 4: AUTH lines (the command with an initial response, and each response) may be up
# to 12288 octets, so that SASL data fits.
MAX_AUTH_LINE = 12288
# RFC 5321 4.5.3.1.6: a text line of a message is at most 1000 octets including CRLF.
MAX_TEXT_LINE = 1000


class OverlongLine:
    """Marker returned by LineReader for a line that exceeded the limit (already discarded)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __repr__(self) -> str:
        return f"OverlongLine({self.length})"


class LineReader:
    """Splits a byte stream into CRLF-terminated lines, never buffering past the limit.

    `next_line()` gives a line without its CRLF, an `OverlongLine` once such a line has ended,
    or None when more input is needed. An over-long line is dropped as it streams in; the
    reader then waits for its CRLF and reports it once.
    """

    def __init__(self, limit: int = MAX_COMMAND_LINE) -> None:
        self.limit = limit  # including CRLF; may be changed between lines (AUTH)
        self._buf = bytearray()
        self._discarding = False
        self._dropped = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        """Forget all buffered input (STARTTLS: nothing sent in clear may survive)."""
        self._buf.clear()
        self._discarding = False
        self._dropped = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Hand over the unread input (for the DATA reader) and clear it."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_line(self) -> bytes | OverlongLine | None:
        end = self._buf.find(CRLF)
        if self._discarding:
            if end < 0:
                keep = 1 if self._buf.endswith(b"\r") else 0  # a CR may start the CRLF
                self._dropped += len(self._buf) - keep
                del self._buf[: len(self._buf) - keep]
                return None
            self._dropped += end + 2
            del self._buf[: end + 2]
            self._discarding = False
            return OverlongLine(self._dropped)
        if end < 0:
            if len(self._buf) > self.limit - 1:  # not even room left for the CRLF
                self._discarding = True
                self._dropped = 0
                return self.next_line()
            return None
        if end + 2 > self.limit:
            del self._buf[: end + 2]
            return OverlongLine(end + 2)
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line


@dataclass
class DataStats:
    """What the unstuffer saw of a message body; the policy decides what it means."""

    size: int = 0  # octets of the message after unstuffing, CRLFs included
    longest_line: int = 0  # octets of the longest line as sent, CRLF included
    bare_lf: int = 0
    bare_cr: int = 0
    received: int = 0  # Received header fields in the header section (a hop count)


# What a header line starts with to count as a hop (RFC 5322 3.6.7; field names are
# case-insensitive), and the octets of a line start that must be kept to tell.
_RECEIVED = b"received:"
_HEAD_OCTETS = len(_RECEIVED)


class DotUnstuffer:
    """Turns the octets after `354` into message content, until CRLF . CRLF (RFC 5321 4.5.2).

    `feed(data)` returns (content, rest): content is the unstuffed message octets that are
    certain so far; rest is None while the message goes on, else the octets that followed the
    end-of-data line (pipelined commands). A leading dot is removed from every line that
    begins with one. Only CRLF ends a line; the first line begins right after the 354.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line_start = True
        self._line_len = 0  # octets of the current line so far, as sent
        self._head = bytearray()  # the first octets of the current line, as content
        self._in_header = True  # until the first empty line
        self.stats = DataStats()
        self.done = False

    def _account(self, piece: bytes | bytearray, ends_line: bool) -> None:
        crlf = piece.count(CRLF)
        self.stats.bare_lf += piece.count(b"\n") - crlf
        self.stats.bare_cr += piece.count(b"\r") - crlf
        self.stats.size += len(piece)
        self._line_len += len(piece)
        if self._in_header and len(self._head) < _HEAD_OCTETS:
            self._head += piece[: _HEAD_OCTETS - len(self._head)]
        if ends_line:  # every line ends with CRLF before the end-of-data line can come
            self.stats.longest_line = max(self.stats.longest_line, self._line_len)
            self._line_len = 0
            if self._in_header:
                if self._head == CRLF:
                    self._in_header = False
                elif bytes(self._head).lower() == _RECEIVED:
                    self.stats.received += 1
                self._head.clear()

    def _whole_lines(self, buf: bytearray, i: int, out: bytearray) -> int:
        """Every complete line of `buf` from `i` (a line start) up to the end-of-data line or
        the last CRLF, unstuffed and counted with a few operations on the whole run instead
        of a pass per line (a message is mostly such runs); where it stopped. The line-by-line
        path of `feed` does the rest: the end-of-data line and a line not yet complete."""
        if buf.startswith(b".\r\n", i):
            return i
        end = buf.find(b"\r\n.\r\n", i)
        stop = end + 2 if end >= 0 else buf.rfind(CRLF, i) + 2
        if stop < i + 2:
            return i  # no complete line yet
        sent = buf[i:stop]
        lines = sent.split(CRLF)  # the last item is the empty text after the final CRLF
        content = sent.replace(b"\r\n.", b"\r\n")  # a dot at a line start: stuffed
        if content.startswith(b"."):
            del content[0]
        stats = self.stats
        crlf = len(lines) - 1
        stats.bare_lf += content.count(b"\n") - crlf
        stats.bare_cr += content.count(b"\r") - crlf
        stats.size += len(content)
        stats.longest_line = max(stats.longest_line, max(map(len, lines)) + 2)
        if self._in_header:
            for line in content.split(CRLF)[:-1]:
                if not line:
                    self._in_header = False
                    break
                if line[:_HEAD_OCTETS].lower() == _RECEIVED:
                    stats.received += 1
        out += content
        return stop

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        if self.done:
            raise RuntimeError("the message has ended; feed the rest to the command reader")
        buf = self._buf + data
        out = bytearray()
        i, n = 0, len(buf)
        while i < n:
            if self._line_start and self._line_len == 0:
                i = self._whole_lines(buf, i, out)
                if i >= n:
                    break
            if self._line_start:
                if buf[i] == 0x2E:  # "."
                    if n - i >= 2 and buf[i + 1] != 0x0D:
                        pass  # a stuffed dot: some other octet follows
                    elif n - i < 3:
                        break  # ".", ".\r": wait for the octet that decides
                    elif buf[i + 1 : i + 3] == CRLF:
                        self.done = True
                        self._buf = bytearray()
                        return bytes(out), bytes(buf[i + 3 :])
                    i += 1  # drop the stuffed dot; it still counts toward the line's length
                    self._line_len += 1
                self._line_start = False
            end = buf.find(CRLF, i)
            if end < 0:
                stop = n - 1 if buf[n - 1] == 0x0D else n  # a final CR may begin a CRLF
                piece = buf[i:stop]
                out += piece
                self._account(piece, ends_line=False)
                i = stop
                break
            piece = buf[i : end + 2]
            out += piece
            self._account(piece, ends_line=True)
            i = end + 2
            self._line_start = True
        self._buf = bytearray(buf[i:])
        return bytes(out), None
