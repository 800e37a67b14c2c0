"""`sendmail`: the local injector that cron, PHP's mail() and scripts call.

Root and the mail owner queue the message in this process (`run`); every other user hands it
to the node's sendmail service over HOME/run/sendmail.sock (`submit`; the service is
`sendmail_daemon`), which knows the caller's uid from the kernel and applies its rate limit.

    sendmail [-t] [-i | -oi] [-f SENDER] [-F FULLNAME] [--home DIR] [--] [RECIPIENT ...]

The message is read from standard input and streamed into the queue (never held whole in
memory); it is queued only when everything about it is right, and the exit status says what
went wrong otherwise (sysexits.h codes, as sendmail uses them). The node is the one named by
--home, else $MAILYARD_HOME, else /var/lib/mailyard. See docs/smtp.md, "sendmail".
"""

from __future__ import annotations

import email.utils
import json
import os
import pwd
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..address import AddressError, parse_mailbox
from ..home import Home, HomeError
from ..queue import Envelope, Queue, QueueError
from ..store.settings_store import load_settings
from .policy import blacklist_match

DEFAULT_HOME = "/var/lib/mailyard"
# sysexits.h, as sendmail and Postfix's sendmail exit.
EX_USAGE = 64
EX_DATAERR = 65
EX_NOPERM = 77
EX_TEMPFAIL = 75
EX_SOFTWARE = 70
# The header block is kept in memory to find recipients (-t) and missing headers; a header
# block this large is no mail (Postfix's header_size_limit is 100 kB; we allow 1 MB).
MAX_HEADER_BYTES = 1024 * 1024
_READ_SIZE = 64 * 1024
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Options of other sendmails that take an argument and that we accept and ignore.
_IGNORED_WITH_ARG = {"-B", "-N", "-R", "-V", "-X", "-L", "-h", "-C", "-O"}
# Delivery modes and other flags that change nothing for us (-odb, -odi, -oem, -v, ...).
_IGNORED_PREFIXES = ("-o", "-v", "-U", "-G", "-n", "-m", "-bm", "-e")


class SendmailError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Options:
    extract: bool = False  # -t
    dot_ends: bool = True  # without -i/-oi a line of a single "." ends the message
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    home: str | None = None
    recipients: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Options:
    """Sendmail's option syntax: `-fADDR` or `-f ADDR`, `-oi`, grouped `-ti`, `--` ends."""
    opts = Options()
    args = list(argv)
    i = 0

    def value(flag: str, attached: str) -> str:
        nonlocal i
        if attached:
            return attached
        i += 1
        if i >= len(args):
            raise SendmailError(f"sendmail: option {flag} needs a value", EX_USAGE)
        return args[i]

    while i < len(args):
        arg = args[i]
        if arg == "--":
            opts.recipients += args[i + 1 :]
            break
        if arg.startswith("--home"):
            opts.home = arg.split("=", 1)[1] if "=" in arg else value("--home", "")
        elif arg in ("-i", "-oi"):
            opts.dot_ends = False
        elif arg in ("-t", "-ti", "-it"):
            opts.extract = True
            opts.dot_ends = opts.dot_ends and arg == "-t"
        elif arg[:2] in ("-f", "-r"):
            opts.sender = value(arg[:2], arg[2:])
        elif arg[:2] == "-F":
            opts.full_name = value("-F", arg[2:])
        elif arg[:2] in _IGNORED_WITH_ARG:
            value(arg[:2], arg[2:])
        elif arg[:2] == "-b" and arg != "-bm":
            raise SendmailError(f"sendmail: mode {arg} is not supported; only sending "
                                "(the default, -bm) is", EX_USAGE)
        elif arg.startswith(_IGNORED_PREFIXES):
            pass
        elif arg.startswith("-") and len(arg) > 1:
            raise SendmailError(f"sendmail: unknown option {arg}", EX_USAGE)
        else:
            opts.recipients.append(arg)
        i += 1
    return opts


def qualify(address: str, default_domain: str) -> str:
    """A plain address with a domain (guide 4.2: bare `fred` becomes fred@<default domain>),
    in its canonical form; SendmailError when it is not an address."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    try:
        path = parse_mailbox(text)
    except AddressError as exc:
        raise SendmailError(f"sendmail: {address!r} is not an address: {exc}", EX_DATAERR) \
            from None
    if path.is_null:
        return ""
    if path.source_route or ("@" in path.unquoted_local and not path.quoted):
        raise SendmailError(f"sendmail: {address!r} is not a plain address", EX_DATAERR)
    if not path.domain:
        path = path.with_domain(default_domain)
    return path.canonical  # the one spelling the blacklist and the store compare


def split_recipients(values: list[str]) -> list[str]:
    """Command-line recipients may be comma-separated lists, as with sendmail."""
    out = []
    for value in values:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return out


# ---- reading the message -------------------------------------------------------------------


class Input:
    """Standard input as lines, ending at EOF or (without -i) at a line of a single dot."""

    def __init__(self, stream: BinaryIO, dot_ends: bool) -> None:
        self.stream = stream
        self.dot_ends = dot_ends
        self._buf = b""
        self._eof = False

    def lines(self) -> Iterator[bytes]:
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if self._eof:
                    if self._buf:
                        rest, self._buf = self._buf, b""
                        if not (self.dot_ends and rest.rstrip(b"\r") == b"."):
                            yield rest
                    return
                chunk = self.stream.read(_READ_SIZE)
                if not chunk:
                    self._eof = True
                self._buf += chunk
                continue
            line, self._buf = self._buf[: end + 1], self._buf[end + 1 :]
            if self.dot_ends and line.rstrip(b"\r\n") == b".":
                return
            yield line


@dataclass
class Headers:
    lines: list[bytes]  # the header fields as read, folded lines joined, endings kept
    newline: bytes  # b"\n" or b"\r\n", as the input writes them
    first_body_line: bytes | None  # a body line that came without a blank line before it
    blank: bytes | None  # the blank line that ended the header, if any

    def named(self, name: bytes) -> list[bytes]:
        key = name.lower() + b":"
        return [h for h in self.lines if h.split(b":", 1)[0].strip().lower() + b":" == key]


def read_headers(lines: Iterator[bytes]) -> Headers:
    fields: list[bytes] = []
    newline = b"\n"
    size = 0
    first = True
    for line in lines:
        if first:
            newline = b"\r\n" if line.endswith(b"\r\n") else b"\n"
            first = False
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise SendmailError(f"sendmail: the header is larger than {MAX_HEADER_BYTES} octets",
                                EX_DATAERR)
        if line.strip(b"\r\n") == b"":
            return Headers(fields, newline, None, line)
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _HEADER_LINE.match(line):
            fields.append(line)
        else:
            return Headers(fields, newline, line, None)
    return Headers(fields, newline, None, None)


def header_addresses(headers: Headers, names: tuple[bytes, ...]) -> list[str]:
    values = []
    for name in names:
        for field_ in headers.named(name):
            text = field_.split(b":", 1)[1].decode("utf-8", "replace")
            values.append(" ".join(text.split()))
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


# ---- the program ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who hands the message in: the calling process's user (the sendmail daemon learns it
    from the socket, SO_PEERCRED; the direct path is the process itself)."""

    uid: int
    login: str
    gecos: str

    @classmethod
    def of_uid(cls, uid: int) -> Caller:
        try:
            entry = pwd.getpwuid(uid)
            return cls(uid, entry.pw_name, entry.pw_gecos.split(",")[0])
        except KeyError:
            return cls(uid, f"uid{uid}", "")


# Called with (sender, recipients) once the whole message is written, before the commit: the
# daemon's rate limit. It raises SendmailError to refuse the message.
BeforeCommit = Callable[[str, list[str]], None]


def run(argv: list[str], stdin: BinaryIO) -> str:
    """Queue one message in this process (root and the mail owner); returns its queue id or
    raises SendmailError."""
    opts = parse_args(argv)
    home = find_home(opts)
    return inject(home, load_node_settings(home), opts, stdin, Caller.of_uid(os.getuid()))


def home_root(opts: Options) -> str:
    return opts.home or os.environ.get("MAILYARD_HOME") or DEFAULT_HOME


def find_home(opts: Options) -> Home:
    try:
        return Home.find(home_root(opts))
    except HomeError as exc:
        raise SendmailError(f"sendmail: {exc}; nothing was sent", EX_TEMPFAIL) from None


def load_node_settings(home: Home) -> dict[str, Any]:
    try:
        return load_settings(home)
    except Exception as exc:
        raise SendmailError(f"sendmail: cannot read the node's settings ({home.db_url}): "
                            f"{type(exc).__name__}: {exc}; nothing was sent", EX_TEMPFAIL) from None


def inject(home: Home, settings: dict[str, Any], opts: Options, stdin: BinaryIO,
           caller: Caller, before_commit: BeforeCommit | None = None) -> str:
    """Read the message from `stdin`, check it and queue it for `caller`; its queue id."""
    default_domain = str(settings["server.default_domain"])
    limit = int(settings["smtp.message_size_mb"]) * 1024 * 1024
    login, gecos = caller.login, caller.gecos
    sender = qualify(opts.sender, default_domain) if opts.sender is not None \
        else f"{login}@{default_domain}"

    source = Input(stdin, opts.dot_ends)
    lines = source.lines()
    headers = read_headers(lines)
    wanted = split_recipients(opts.recipients)
    if opts.extract:
        wanted += header_addresses(headers, (b"to", b"cc", b"bcc"))
    recipients: list[str] = []
    for address in wanted:
        full = qualify(address, default_domain)
        if full and full.lower() not in (r.lower() for r in recipients):
            recipients.append(full)
    if not recipients:
        raise SendmailError("sendmail: no recipients: name them as arguments or use -t with "
                            "To:, Cc: or Bcc: headers", EX_USAGE)
    patterns = tuple(settings["smtp.outbound_blacklist"])
    for rcpt in recipients:
        hit = blacklist_match(patterns, rcpt)
        if hit:
            raise SendmailError(f"sendmail: sending to {rcpt} is not allowed from this server "
                                f"(outbound blacklist entry {hit}); nothing was sent", EX_NOPERM)

    nl = headers.newline
    added = [f"Received: (mailyard-sendmail invoked by uid {caller.uid}); "
             f"{email.utils.formatdate(localtime=True)}".encode() + nl]
    if not headers.named(b"from"):
        name = opts.full_name if opts.full_name is not None else gecos
        added.append(b"From: " + email.utils.formataddr((name, sender or
                                                          f"{login}@{default_domain}"))
                     .encode("utf-8", "replace") + nl)
    if not headers.named(b"date"):
        added.append(b"Date: " + email.utils.formatdate(localtime=True).encode() + nl)
    if not headers.named(b"message-id"):
        added.append(b"Message-ID: " + _message_id(default_domain).encode() + nl)
    kept = [h for h in headers.lines if h.split(b":", 1)[0].strip().lower() != b"bcc"]

    try:
        queue = Queue(home.queue_dir)
        with queue.open_message() as writer:
            size = 0

            def put(data: bytes) -> None:
                nonlocal size
                size += len(data)
                if limit and size > limit:
                    raise SendmailError(f"sendmail: the message is larger than the limit of "
                                        f"{limit} octets (smtp.message_size_mb); nothing was "
                                        "sent", EX_DATAERR)
                writer.write(data)

            for part in added + kept:
                put(part)
            put(headers.blank if headers.blank is not None else nl)
            if headers.first_body_line is not None:
                put(headers.first_body_line)
            for line in lines:
                put(line)
            if before_commit is not None:
                before_commit(sender, recipients)
            return writer.commit(Envelope(sender=sender, recipients=recipients,
                                          uid=caller.uid, protocol="local"))
    except QueueError as exc:
        raise SendmailError(f"sendmail: cannot queue the message: {exc}; nothing was sent",
                            EX_TEMPFAIL) from None


def _message_id(domain: str) -> str:
    return f"<{time.time_ns()}.{os.getpid()}.{socket.gethostname().split('.')[0]}@{domain}>"


# ---- every other user: through the sendmail service's socket ------------------------------------

SOCKET_NAME = "run/sendmail.sock"  # below the home; the daemon's side is sendmail_daemon.py
# Seconds to wait for the daemon's answer once the message is sent (it checks, syncs, counts).
ANSWER_TIMEOUT = 120.0


def direct(root: Path) -> bool:
    """Whether this process queues the message itself: root, and the mail owner (the owner
    of the queue); every other user goes through the sendmail service."""
    uid = os.getuid()
    if uid == 0:
        return True
    try:
        return os.stat(root / "queue").st_uid == uid
    except OSError:
        return False


def submit(argv: list[str], stdin: BinaryIO) -> str:
    """Hand the message to the sendmail service (protocol in sendmail_daemon's docstring);
    its queue id, or SendmailError with the daemon's status and reason."""
    opts = parse_args(argv)  # usage errors are told at once, without the daemon
    path = Path(home_root(opts)) / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise SendmailError(f"sendmail: the node's sendmail service does not answer at "
                                f"{path} ({exc.strerror or exc}); is it running (mailyard "
                                "status)? nothing was sent", EX_TEMPFAIL) from None
        try:
            sock.sendall(json.dumps({"v": 1, "args": argv}).encode() + b"\n")
            while chunk := stdin.read(_READ_SIZE):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon refused before the end: its answer says why
        sock.settimeout(ANSWER_TIMEOUT)
        answer = b""
        try:
            while not answer.endswith(b"\n") and len(answer) < 64 * 1024:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            raise SendmailError(f"sendmail: no answer from the sendmail service ({exc}); the "
                                "message may not have been sent", EX_TEMPFAIL) from None
    finally:
        sock.close()
    status, _, text = answer.decode("utf-8", "replace").strip().partition(" ")
    if not status.isdigit():
        raise SendmailError("sendmail: the sendmail service ended the connection without an "
                            "answer; nothing was sent", EX_TEMPFAIL)
    if int(status) != 0:
        raise SendmailError(text, int(status))
    return text


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        try:
            root = Path(home_root(parse_args(args)))
        except SendmailError:
            root = Path(DEFAULT_HOME)  # the option error is told by the call below
        (run if direct(root) else submit)(args, sys.stdin.buffer)
    except SendmailError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.status)
    except KeyboardInterrupt:
        print("sendmail: interrupted; nothing was sent", file=sys.stderr)
        sys.exit(EX_TEMPFAIL)


if __name__ == "__main__":
    main()
