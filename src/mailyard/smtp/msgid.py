"""The Message-ID of a message on its way in, picked from its header block as DATA streams.

The SMTP log's `accepted` line names the message by its Message-ID, so that `mailyard trail`
finds a message by the identifier its sender sees in their mail program. Only the header
block is looked at (up to the first empty line), and only its first `MAX_HEADER_BYTES`
octets are kept; the body is never buffered. Sans-io: bytes in, an identifier out.
"""

from __future__ import annotations

import re

# The most header octets kept to look for the Message-ID: Postfix's header_size_limit
# (102400) is the precedent; a Message-ID further down than that is not looked for.
MAX_HEADER_BYTES = 102_400
# The longest Message-ID we log: RFC 5322 sets no limit, but a line must stay a line; 250
# octets is past every real generator (they write 30 to 100) and keeps a log line short.
MAX_MSGID_LENGTH = 250

_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")
# A Message-ID field at the start of a header line, its value running over folded lines.
_FIELD = re.compile(rb"(?:^|\n)message-id[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)", re.I)
_ANGLE = re.compile(r"<([^<>\s]+)>")


class HeaderScan:
    """Collects the header block of one message from its DATA chunks."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._done = False

    def feed(self, data: bytes) -> None:
        """The next octets of the message (unstuffed, as the client sent them)."""
        if self._done:
            return
        start = max(0, len(self._head) - 3)  # an end of header split between two chunks
        self._head += data[:MAX_HEADER_BYTES + 4 - len(self._head)]
        if self._head[:1] == b"\n" or self._head[:2] == b"\r\n":  # no header at all
            self._head.clear()
            self._done = True
            return
        m = _END_OF_HEADER.search(self._head, start)
        if m is not None:
            del self._head[m.start():]
            self._done = True
        elif len(self._head) >= MAX_HEADER_BYTES:
            self._done = True

    @property
    def message_id(self) -> str:
        """The Message-ID without its angle brackets, "" when the header has none."""
        return message_id_of(bytes(self._head))


def message_id_of(header: bytes) -> str:
    """The first Message-ID field's identifier in a header block ("" if none or unreadable).

    The brackets are dropped; an identifier without brackets (seen from broken generators)
    is taken as written, up to its first space. Anything after the header's end is not read."""
    end = _END_OF_HEADER.search(header)
    m = _FIELD.search(header, 0, end.start() if end else len(header))
    if m is None:
        return ""
    value = re.sub(r"\r?\n[ \t]", " ", m[1].decode("utf-8", "replace")).strip()
    angle = _ANGLE.search(value)
    found = angle[1] if angle else (value.split()[0] if value else "")
    return found[:MAX_MSGID_LENGTH]
