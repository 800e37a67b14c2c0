"""The SMTP server session as a sans-io state machine: bytes in, events out, replies in, bytes out.

No sockets and no event loop here (the style of h11). The driver feeds what it reads to
`receive_data`, takes events from `next_event`, decides each reply (with `policy`) and passes
it to `send`, which returns the octets to write and moves the session along the transition
table below. The table is keyed by (state, event type) and gives the next state for each
outcome of the reply: "ok" (2xx), "more" (3xx) and "fail" (4xx/5xx); a missing outcome keeps
the state. A command with no entry for the current state is refused with 503 by the machine
itself, which reports it as `BadInput`.

Commands are handled one at a time, in order, so PIPELINING (RFC 2920) needs nothing more.
When STARTTLS is accepted everything the client sent after it in clear is thrown away
(RFC 3207 4.2, CVE-2011-0411) and the session starts over once TLS is up.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from ..address import AddressError, Path, parse_path_argument
from . import replies as R
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
from .lines import MAX_AUTH_LINE, MAX_COMMAND_LINE, DotUnstuffer, LineReader, OverlongLine

# Errors (4xx/5xx replies) after which the server hangs up with 421: Postfix's
# smtpd_hard_error_limit is 20 as well. A client sending garbage gets no endless conversation.
MAX_ERRORS = 20
# RFC 4954 6: 235 is the one reply that ends an AUTH exchange signed in.
AUTH_SUCCESS = 235


class State(enum.Enum):
    GREETING = "greeting"  # connected; the driver has not sent the greeting yet
    REFUSED = "refused"  # greeted with 554 (RFC 5321 3.1): only QUIT is accepted
    INITIAL = "initial"  # greeted; no HELO/EHLO yet (again after STARTTLS)
    READY = "ready"  # HELO/EHLO done, no mail transaction
    MAIL = "mail"  # MAIL FROM accepted
    RCPT = "rcpt"  # at least one RCPT TO accepted
    DATA = "data"  # message octets are streaming
    AUTH = "auth"  # inside an AUTH exchange: lines are SASL responses
    TLS_STARTING = "tls"  # 220 sent to STARTTLS; the driver runs the handshake
    CLOSED = "closed"


S = State
_OK, _MORE, _FAIL = "ok", "more", "fail"

# The transition table: (state, event type) -> {outcome of the reply: next state}.
TRANSITIONS: dict[tuple[State, type[Event]], dict[str, State]] = {}


def _allow(states: tuple[State, ...], event: type[Event], **outcomes: State) -> None:
    for state in states:
        TRANSITIONS[(state, event)] = dict(outcomes)


_GREETED = (S.INITIAL, S.READY, S.MAIL, S.RCPT)
_allow(_GREETED, Ehlo, ok=S.READY)  # RFC 5321 4.1.4: EHLO in a transaction resets it
_allow(_GREETED, Helo, ok=S.READY)
_allow((S.READY,), MailFrom, ok=S.MAIL)
_allow((S.MAIL, S.RCPT), RcptTo, ok=S.RCPT)
_allow((S.RCPT,), Data, more=S.DATA)
_allow((S.DATA,), EndOfData, ok=S.READY, fail=S.READY)
_allow((S.INITIAL, S.READY), StartTls, ok=S.TLS_STARTING)
_allow((S.READY,), Auth, ok=S.READY, more=S.AUTH, fail=S.READY)
_allow((S.AUTH,), AuthResponse, ok=S.READY, more=S.AUTH, fail=S.READY)
_allow((S.INITIAL,), Rset, ok=S.INITIAL)
_allow((S.READY, S.MAIL, S.RCPT), Rset, ok=S.READY)
_allow(_GREETED, Noop)
_allow(_GREETED, Vrfy)
_allow(_GREETED, Help)
_allow(_GREETED + (S.REFUSED,), Quit, ok=S.CLOSED)

# Why a command is out of sequence, for the 503 text.
_SEQUENCE_HINTS: dict[tuple[State, type[Event]], str] = {
    (S.INITIAL, MailFrom): "Send HELO or EHLO first",
    (S.INITIAL, Auth): "Send EHLO first",
    (S.MAIL, MailFrom): "Nested MAIL command",
    (S.RCPT, MailFrom): "Nested MAIL command",
    (S.INITIAL, RcptTo): "Need MAIL before RCPT",
    (S.READY, RcptTo): "Need MAIL before RCPT",
    (S.INITIAL, Data): "Need MAIL before DATA",
    (S.READY, Data): "Need MAIL before DATA",
    (S.MAIL, Data): "Need RCPT before DATA",
    (S.MAIL, Auth): "AUTH is not allowed during a mail transaction",
    (S.RCPT, Auth): "AUTH is not allowed during a mail transaction",
    (S.MAIL, StartTls): "STARTTLS is not allowed during a mail transaction",
    (S.RCPT, StartTls): "STARTTLS is not allowed during a mail transaction",
}

# The octets a command line may hold: printable ASCII and tab (RFC 5321 4.1.1).
_COMMAND_OCTETS = bytes(range(0x20, 0x7F)) + b"\t"
_VERBS: dict[str, type[Event]] = {
    "HELO": Helo, "EHLO": Ehlo, "MAIL": MailFrom, "RCPT": RcptTo, "DATA": Data,
    "RSET": Rset, "NOOP": Noop, "QUIT": Quit, "VRFY": Vrfy, "HELP": Help,
    "STARTTLS": StartTls, "AUTH": Auth,
}
# Known commands we do not implement (RFC 5321 4.2.4 says 502 for them, not 500).
_NOT_IMPLEMENTED = {"EXPN", "TURN", "ETRN", "BDAT", "SEND", "SOML", "SAML", "ATRN"}


class ProtocolError(RuntimeError):
    """The driver used the machine wrongly (a bug in our code, never the client's)."""


@dataclass
class Session:
    """What the session knows: the facts policy decides on."""

    client_ip: str
    tls: bool = False
    helo: str = ""
    esmtp: bool = False
    auth_user: str = ""
    sender: Path | None = None
    recipients: list[Path] = field(default_factory=list)
    params: dict[str, str | None] = field(default_factory=dict)  # of the MAIL command
    errors: int = 0
    messages: int = 0

    def reset_transaction(self) -> None:
        self.sender = None
        self.recipients = []
        self.params = {}


class ServerConnection:
    """One SMTP session, server side, without I/O."""

    def __init__(self, client_ip: str, *, tls: bool = False) -> None:
        self.session = Session(client_ip=client_ip, tls=tls)
        self.state = State.GREETING
        self._reader = LineReader(MAX_AUTH_LINE)
        self._unstuffer: DotUnstuffer | None = None
        self._raw = bytearray()  # DATA input not yet given to the unstuffer
        self._ready: deque[Event] = deque()
        self._pending: Event | None = None
        self._eof = False

    # ---- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Octets from the client; b"" means the client closed its side."""
        if not data:
            self._eof = True
        elif self.state is State.TLS_STARTING:
            return  # after 220 to STARTTLS, clear text is never read (RFC 3207 4.2)
        elif self.state is State.DATA:
            self._raw += data
        else:
            self._reader.feed(data)

    @property
    def too_many_errors(self) -> bool:
        return self.session.errors >= MAX_ERRORS

    def next_event(self) -> Event | None:
        """The next event, or None when more input is needed (or the session is over)."""
        if self._pending is not None:
            raise ProtocolError(f"reply to {self._pending!r} before asking for more events")
        if self.state in (State.GREETING, State.TLS_STARTING, State.CLOSED):
            if self.state is State.GREETING:
                raise ProtocolError("send the greeting first")
            return None
        if self._ready:
            return self._hand_out(self._ready.popleft())
        if self.state is State.DATA:
            return self._next_data_event()
        line = self._reader.next_line()
        if line is None:
            if self._eof:
                self.state = State.CLOSED
                return ConnectionClosed(in_data=False)
            return None
        if isinstance(line, OverlongLine):
            limit = MAX_AUTH_LINE if self.state is State.AUTH else MAX_COMMAND_LINE
            return self._hand_out(BadInput(R.LINE_TOO_LONG.format(limit=limit),
                                           f"{line.length} octets"))
        if self.state is State.AUTH:
            return self._hand_out(self._auth_line(line))
        return self._hand_out(self._command(line))

    def _hand_out(self, event: Event) -> Event:
        if not isinstance(event, (DataChunk, ConnectionClosed)):
            self._pending = event
        return event

    def _next_data_event(self) -> Event | None:
        assert self._unstuffer is not None
        if self._raw:
            raw = bytes(self._raw)
            self._raw.clear()
            content, rest = self._unstuffer.feed(raw)
            if rest is not None:
                self._reader.feed(rest)
                self._ready.append(EndOfData(self._unstuffer.stats))
            if content:
                return self._hand_out(DataChunk(content))
            if self._ready:
                return self._hand_out(self._ready.popleft())
        if self._eof:
            self.state = State.CLOSED
            return ConnectionClosed(in_data=True)
        return None

    # ---- parsing commands ------------------------------------------------------------------
    def _auth_line(self, line: bytes) -> Event:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return BadInput(R.AUTH_MALFORMED.format(detail="not base64"), "non-ASCII")
        return AuthResponse(text.strip())

    def _command(self, line: bytes) -> Event:
        if b"\r" in line or b"\n" in line:
            return BadInput(R.BARE_CR_OR_LF, repr(line[:80]))
        if line.translate(None, _COMMAND_OCTETS):  # something left: not printable ASCII or tab
            return BadInput(R.BAD_CHARACTERS, repr(line[:80]))
        text = line.decode("ascii")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        kind = _VERBS.get(verb)
        if kind is not Auth and len(line) + 2 > MAX_COMMAND_LINE:
            return BadInput(R.LINE_TOO_LONG.format(limit=MAX_COMMAND_LINE),
                            f"{len(line) + 2} octets")
        if kind is None:
            if verb in _NOT_IMPLEMENTED:
                return BadInput(R.NOT_IMPLEMENTED.format(command=verb), verb)
            return BadInput(R.UNKNOWN_COMMAND, text[:80])
        if self.state is State.REFUSED and kind is not Quit:
            return BadInput(R.ONLY_QUIT, verb)
        if (self.state, kind) not in TRANSITIONS:
            hint = _SEQUENCE_HINTS.get((self.state, kind), f"{verb} is not allowed now")
            return BadInput(R.BAD_SEQUENCE.format(detail=hint), verb)
        try:
            return self._build(kind, verb, arg)
        except AddressError as exc:
            return BadInput(R.BAD_ADDRESS.format(detail=str(exc)), str(exc))
        except _SyntaxProblem as exc:
            return BadInput(R.SYNTAX_ERROR.format(detail=str(exc)), str(exc))
        except _SequenceProblem as exc:
            return BadInput(R.BAD_SEQUENCE.format(detail=str(exc)), str(exc))

    def _build(self, kind: type[Event], verb: str, arg: str) -> Event:
        arg_s = arg.strip(" \t")
        if kind in (Helo, Ehlo):
            if not arg_s or " " in arg_s:
                raise _SyntaxProblem(f"{verb} needs one argument: your domain or address literal")
            return kind(arg_s)  # type: ignore[call-arg]
        if kind is MailFrom or kind is RcptTo:
            keyword = "FROM:" if kind is MailFrom else "TO:"
            if not arg_s.upper().startswith(keyword):
                raise _SyntaxProblem(f"write {verb} {keyword}<address>")
            path, params = parse_path_argument(arg_s[len(keyword):])
            if kind is RcptTo and path.is_null:
                raise AddressError("<> is not a recipient")
            return kind(path, params)  # type: ignore[call-arg]
        if kind in (Data, Rset, Quit, StartTls):
            if arg_s:
                raise _SyntaxProblem(f"{verb} takes no arguments")
            if kind is StartTls and self.session.tls:
                raise _SequenceProblem("TLS is already active")
            return kind()
        if kind is Vrfy:
            if not arg_s:
                raise _SyntaxProblem("VRFY needs an argument")
            return Vrfy(arg_s)
        if kind is Auth:
            if self.session.auth_user:
                raise _SequenceProblem("Already authenticated")
            parts = arg_s.split()
            if not parts or len(parts) > 2:
                raise _SyntaxProblem("write AUTH MECHANISM [initial-response]")
            return Auth(parts[0].upper(), parts[1] if len(parts) == 2 else None)
        return kind()  # NOOP, HELP: arguments ignored (RFC 5321 4.1.1.9)

    # ---- output ----------------------------------------------------------------------------
    def greet(self, reply: R.Reply) -> bytes:
        """The first reply: 220 opens the session, 554 refuses it, 421 closes it."""
        if self.state is not State.GREETING:
            raise ProtocolError("the greeting was sent already")
        if reply.code == 220:
            self.state = State.INITIAL
        elif reply.code == 554:
            self.state = State.REFUSED
        else:
            self.state = State.CLOSED
        return bytes(reply)

    def send(self, reply: R.Reply, *, accepted: Path | None = None,
             user: str | None = None) -> bytes:
        """The reply to the pending event; moves the session on. `accepted` records the path
        as policy normalised it (e.g. with the default domain added); `user` is who a
        successful AUTH (235) signed in, which the session records itself."""
        event = self._pending
        if event is None:
            raise ProtocolError(f"no event waits for a reply (sending {reply.short()})")
        self._pending = None
        if not reply.positive:
            self.session.errors += 1
        if isinstance(event, BadInput):
            return bytes(reply)
        outcomes = TRANSITIONS.get((self.state, type(event)))
        if outcomes is None:
            raise ProtocolError(f"{type(event).__name__} has no transition from {self.state}")
        new_state = outcomes.get(reply.outcome, self.state)
        self._record(event, reply, accepted, user)
        self.state = new_state
        if new_state is State.DATA:
            self._unstuffer = DotUnstuffer()
            self._raw += self._reader.take_buffer()
        elif new_state is State.TLS_STARTING:
            self._reader.clear()  # pipelined clear-text commands die here
            self._ready.clear()
        return bytes(reply)

    def _record(self, event: Event, reply: R.Reply, accepted: Path | None,
                user: str | None) -> None:
        s = self.session
        ok = reply.outcome == _OK
        if isinstance(event, (Auth, AuthResponse)) and reply.code == AUTH_SUCCESS:
            if not user:
                raise ProtocolError("a successful AUTH needs the user it signed in")
            s.auth_user = user
        if isinstance(event, (Helo, Ehlo)) and ok:
            s.reset_transaction()
            s.helo = event.name
            s.esmtp = isinstance(event, Ehlo)
        elif isinstance(event, MailFrom) and ok:
            s.sender = accepted or event.path
            s.params = dict(event.params)
        elif isinstance(event, RcptTo) and ok:
            s.recipients.append(accepted or event.path)
        elif isinstance(event, Rset) and ok:
            s.reset_transaction()
        elif isinstance(event, EndOfData):
            if ok:
                s.messages += 1
            s.reset_transaction()
            self._unstuffer = None

    def close(self, reply: R.Reply) -> bytes:
        """A reply that ends the session at any point (421 timeout, shutdown, too many errors)."""
        self._pending = None
        self.state = State.CLOSED
        return bytes(reply)

    def tls_started(self) -> None:
        """The handshake is done: start over as RFC 3207 4.2 requires (EHLO again)."""
        if self.state is not State.TLS_STARTING:
            raise ProtocolError(f"no STARTTLS is in progress (state {self.state})")
        self._reader.clear()
        self.session.tls = True
        self.session.helo = ""
        self.session.esmtp = False
        self.session.auth_user = ""
        self.session.reset_transaction()
        self.state = State.INITIAL


class _SyntaxProblem(ValueError):
    pass


class _SequenceProblem(ValueError):
    pass

