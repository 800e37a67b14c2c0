"""SMTP replies as the client reads them (RFC 5321 4.2), and the message body as sent (4.5.2).

Plain functions without I/O: `ReplyReader` takes lines and says when a reply is complete;
`dot_stuffed` turns stored message lines into DATA lines, `stuff_block` does the same to a
whole block of lines at C speed (bytes.replace) rather than line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# A reply of more lines than this is a broken or hostile server (Postfix's smtp client stops
# reading a reply at 2048 lines x 2 KB; we allow fewer lines since nobody sends long ones).
MAX_REPLY_LINES = 200
_LINE = re.compile(rb"^([2-5]\d\d)([ -]|$)(.*)$", re.S)


class ReplyError(Exception):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # each full line, code included ("250-PIPELINING")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def keywords(self) -> set[str]:
        """EHLO keywords (the first word of each line after the first), upper case."""
        out = set()
        for line in self.lines[1:]:
            word = line[4:].split(" ", 1)[0].strip().upper()
            if word:
                out.add(word)
        return out


class ReplyReader:
    """Feed lines one at a time; `feed` returns the Reply once its last line arrived."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._code: bytes | None = None

    def feed(self, raw: bytes) -> Reply | None:
        line = raw.rstrip(b"\r\n")
        m = _LINE.match(line)
        if not m:
            raise ReplyError(f"not an SMTP reply line: {line[:80]!r}")
        code, sep = m.group(1), m.group(2)
        if self._code is not None and code != self._code:
            raise ReplyError(f"reply code changed within a reply: {line[:80]!r}")
        self._code = code
        self._lines.append(line.decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ReplyError(f"reply longer than {MAX_REPLY_LINES} lines")
        if sep == b"-":
            return None
        reply = Reply(int(code), tuple(self._lines))
        self._lines, self._code = [], None
        return reply


def dot_stuffed(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Stored lines (ending in LF or CRLF) as DATA lines: CRLF endings, leading dots doubled."""
    for line in lines:
        if line.endswith(b"\r\n"):
            body = line[:-2]
        elif line.endswith(b"\n"):
            body = line[:-1]
        else:
            body = line  # a last line without an ending gets one
        if body.startswith(b"."):
            body = b"." + body
        yield body + b"\r\n"


def stuff_block(block: bytes) -> bytes:
    """`block` (starting at a line start) as DATA lines, exactly as `dot_stuffed` would give
    them: every LF-ended line gets CRLF, a last line without an ending gets one, and a dot at
    the start of a line is doubled."""
    if not block:
        return b""
    out = block.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    out = out.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    return out
