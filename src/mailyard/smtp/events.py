"""What the SMTP protocol machine reports: one small immutable event per command or data part.

Every command event is answered by exactly one reply passed to `ServerConnection.send`;
`DataChunk` needs none; `EndOfData` needs the final reply of the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..address import Path
from .lines import DataStats
from .replies import Reply


class Event:
    """Base class of everything `ServerConnection.next_event` returns."""

    verb = ""


@dataclass(frozen=True)
class Helo(Event):
    name: str
    verb = "HELO"


@dataclass(frozen=True)
class Ehlo(Event):
    name: str
    verb = "EHLO"


@dataclass(frozen=True)
class MailFrom(Event):
    path: Path
    params: dict[str, str | None] = field(default_factory=dict)
    verb = "MAIL"


@dataclass(frozen=True)
class RcptTo(Event):
    path: Path
    params: dict[str, str | None] = field(default_factory=dict)
    verb = "RCPT"


@dataclass(frozen=True)
class Data(Event):
    verb = "DATA"


@dataclass(frozen=True)
class Rset(Event):
    verb = "RSET"


@dataclass(frozen=True)
class Noop(Event):
    verb = "NOOP"


@dataclass(frozen=True)
class Quit(Event):
    verb = "QUIT"


@dataclass(frozen=True)
class Vrfy(Event):
    argument: str
    verb = "VRFY"


@dataclass(frozen=True)
class Help(Event):
    verb = "HELP"


@dataclass(frozen=True)
class StartTls(Event):
    verb = "STARTTLS"


@dataclass(frozen=True)
class Auth(Event):
    mechanism: str  # upper case
    initial: str | None  # the initial response (RFC 4954 4), "=" meaning empty, or None
    verb = "AUTH"


@dataclass(frozen=True)
class AuthResponse(Event):
    """One line the client sent during an AUTH exchange (base64, or `*` to cancel)."""

    text: str
    verb = "AUTH-RESPONSE"


@dataclass(frozen=True)
class DataChunk(Event):
    """Message octets, unstuffed, in order; CRLFs kept as sent."""

    data: bytes
    verb = "DATA-CHUNK"


@dataclass(frozen=True)
class EndOfData(Event):
    stats: DataStats
    verb = "END-OF-DATA"


@dataclass(frozen=True)
class BadInput(Event):
    """Input the machine refused by itself (syntax, sequence, length); send `reply` back."""

    reply: Reply
    detail: str = ""
    verb = "BAD-INPUT"


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The client closed its side. `in_data` says the message was cut off mid-DATA."""

    in_data: bool = False
    verb = "CLOSED"
