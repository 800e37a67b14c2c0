"""Every reply code and text the SMTP servers send, in one table.

A reply is a code (RFC 5321 4.2), an enhanced status code (RFC 3463, sent as RFC 2034 says)
and a text. Texts may hold `{placeholders}` filled with `Reply.format`. Each reply's table name
doubles as the rule name in the service log, so a rejection in the log says which rule fired.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, "" where RFC 2034 leaves it out (greeting, EHLO, 334)
    text: str
    name: str = ""

    @property
    def positive(self) -> bool:
        """2xx and 3xx: the command was accepted (RFC 5321 4.2.1)."""
        return self.code < 400

    @property
    def outcome(self) -> str:
        """"ok" (2xx), "more" (3xx: the client goes on) or "fail" (4xx, 5xx)."""
        if self.code < 300:
            return "ok"
        if self.code < 400:
            return "more"
        return "fail"

    def format(self, **values: object) -> Reply:
        return replace(self, text=self.text.format(**values))

    def with_text(self, text: str) -> Reply:
        return replace(self, text=text)

    def lines(self) -> list[str]:
        """The text lines of the reply, each without code; never empty."""
        return self.text.split("\n") or [""]

    def __bytes__(self) -> bytes:
        return self.wire

    @cached_property
    def wire(self) -> bytes:
        """The reply as sent, made once per reply (most are constants of this table)."""
        parts = self.lines()
        out = []
        for i, line in enumerate(parts):
            sep = " " if i == len(parts) - 1 else "-"
            body = f"{self.status} {line}" if self.status else line
            out.append(f"{self.code}{sep}{body}\r\n")  # "334 " keeps its space (RFC 4954)
        return "".join(out).encode("utf-8", "replace")

    def short(self) -> str:
        """Code and status for the log, e.g. `554 5.7.1`."""
        return f"{self.code} {self.status}".strip()


def _r(code: int, status: str, text: str) -> Reply:
    return Reply(code, status, text)


# ---- the table ---------------------------------------------------------------------------------
# 2xx and 3xx
GREETING = _r(220, "", "{greeting} ESMTP")
READY_FOR_TLS = _r(220, "2.0.0", "Ready to start TLS")
CLOSING = _r(221, "2.0.0", "{hostname} closing connection")
HELP = _r(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
                        "VRFY STARTTLS AUTH")
AUTH_OK = _r(235, "2.7.0", "Authentication successful")
HELO_OK = _r(250, "", "{hostname}")
EHLO_OK = _r(250, "", "{lines}")  # first line the hostname, then one extension per line
OK = _r(250, "2.0.0", "Ok")
SENDER_OK = _r(250, "2.1.0", "Sender ok")
RECIPIENT_OK = _r(250, "2.1.5", "Recipient ok")
RESET_OK = _r(250, "2.0.0", "Reset state")
QUEUED = _r(250, "2.0.0", "Ok: queued as {qid}")
CANNOT_VRFY = _r(252, "2.5.0", "Cannot VRFY user, but will accept mail and attempt delivery")
AUTH_CHALLENGE = _r(334, "", "{challenge}")
START_DATA = _r(354, "", "End data with <CR><LF>.<CR><LF>")

# 4xx: try again later
TOO_MANY_CONNECTIONS = _r(421, "4.7.0", "{hostname} too many connections, try again later")
TIMEOUT = _r(421, "4.4.2", "{hostname} timeout exceeded, closing connection")
SHUTTING_DOWN = _r(421, "4.3.2", "{hostname} shutting down, try again later")
SESSION_TOO_LONG = _r(421, "4.4.2", "{hostname} this session has lasted too long, please "
                      "reconnect")
DATA_TOO_SLOW = _r(421, "4.4.2", "{hostname} the message is arriving too slowly (under "
                   "{rate} bytes per second), please try again")
TOO_MANY_ERRORS = _r(421, "4.7.0", "{hostname} too many errors, closing connection")
TOO_MANY_FROM_CLIENT = _r(421, "4.7.0", "{hostname} too many connections from your address, "
                                        "try again later")
QUEUE_ERROR = _r(451, "4.3.0", "Temporary failure writing the queue, try again later")
LOCAL_ERROR = _r(451, "4.3.0", "Local error in processing, try again later")
LOOKUP_ERROR = _r(451, "4.3.0", "Temporary failure looking up {what}, try again later")
FILTER_ERROR = _r(451, "4.3.0", "Temporary failure scanning the message, try again later")
QUEUE_FULL = _r(452, "4.3.1", "Insufficient system storage, try again later")
TOO_MANY_RECIPIENTS = _r(452, "4.5.3", "Too many recipients (at most {limit} per message)")
AUTH_TEMPORARY = _r(454, "4.7.0", "Temporary authentication failure, try again later")
TLS_NOT_AVAILABLE = _r(454, "4.7.0", "TLS not available")
POSTMASTER_MISSING = _r(451, "4.3.5", "Mail for postmaster goes to {address}, which is not an "
                                      "active mailbox here yet; try again later")

# 5xx: refused
LINE_TOO_LONG = _r(500, "5.5.2", "Line too long (at most {limit} octets with CRLF)")
BARE_CR_OR_LF = _r(500, "5.5.2", "Command line contains a bare CR or LF; lines end with CRLF")
BAD_CHARACTERS = _r(500, "5.5.2", "Command line contains control or non-ASCII characters")
UNKNOWN_COMMAND = _r(500, "5.5.1", "Command not recognized")
SYNTAX_ERROR = _r(501, "5.5.4", "Syntax error: {detail}")
BAD_ADDRESS = _r(501, "5.1.3", "Bad address syntax: {detail}")
SENDER_NEEDS_DOMAIN = _r(501, "5.1.7", "{address}: the sender address needs a domain")
AUTH_CANCELLED = _r(501, "5.0.0", "Authentication cancelled")
AUTH_MALFORMED = _r(501, "5.5.2", "Cannot decode the authentication data: {detail}")
NOT_IMPLEMENTED = _r(502, "5.5.1", "{command} not implemented")
NOT_OFFERED = _r(502, "5.5.1", "{command} is not offered on this connection")
BAD_SEQUENCE = _r(503, "5.5.1", "{detail}")
ONLY_QUIT = _r(503, "5.5.1", "This session was refused; only QUIT is accepted")
UNKNOWN_MECHANISM = _r(504, "5.5.4", "Unrecognized authentication mechanism {mechanism}")
TLS_REQUIRED = _r(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = _r(530, "5.7.0", "Authentication required")
AUTH_FAILED = _r(535, "5.7.8", "Authentication credentials invalid")
AUTH_NEEDS_TLS = _r(538, "5.7.11", "Encryption required for requested authentication mechanism")
NO_SUCH_USER = _r(550, "5.1.1", "{address}: no such mailbox here")
MAILBOX_DISABLED = _r(550, "5.2.1", "{address}: this mailbox is disabled and takes no mail")
MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message exceeds the size limit of {limit} octets")
RELAY_TRICK = _r(553, "5.7.1", "{address}: addresses with % ! or a source route are not "
                               "routed here")
INBOUND_BLACKLIST = _r(553, "5.7.1", "{address}: address refused by this server's blacklist")
OUTBOUND_BLACKLIST = _r(553, "5.7.1", "{address}: sending to this address is not allowed from "
                                      "this server")
SENDER_NOT_OWNED = _r(553, "5.7.1", "{address}: you are logged in as {user}, who may not send "
                                    "as this address")
RELAY_DENIED = _r(554, "5.7.1", "{address}: relay access denied")
RBL_LISTED = _r(554, "5.7.1", "Service unavailable; client [{ip}] blocked using {zone}")
LONG_TEXT_LINE = _r(554, "5.6.0", "Message refused: a text line is longer than {limit} octets "
                                  "(RFC 5321 4.5.3.1.6); wrap or encode the message")
TOO_MANY_HOPS = _r(554, "5.4.6", "Too many hops: {count} Received headers with ours (limit "
                                "{limit}); the message is probably looping")
BAD_PARAMETER = _r(555, "5.5.4", "Parameter {param} not recognized or not implemented")

# Mail authentication of incoming mail (RFC 7489 10.1; RFC 7372 3.2 for the SPF code).
DMARC_REJECT = _r(550, "5.7.1", "Message refused: {domain} asks receivers to reject mail that "
                  "fails its DMARC policy, and this message does")
SPF_FAIL = _r(550, "5.7.23", "SPF check failed: {ip} is not allowed to send mail for {domain}")
AUTH_CHECK_GROUP = _r(452, "4.5.3", "{address}: please send to this recipient in another "
                      "transaction (its domain has its own mail authentication policy)")

MAILBOX_FULL = _r(552, "5.2.2", "{address}: mailbox is full")

# The SMTP-level filters' verdicts at the end of DATA (filters/policy.py decides which).
# Permanent: the same message would be refused again; the sender's MTA bounces it.
VIRUS_FOUND = _r(554, "5.7.1", "message refused: virus {signature} found")
# Temporary: clamd is down or slow. The sender keeps the message and retries, so turning
# virus scanning on can delay mail but never lose it (the guide's warning, made safe).
VIRUS_SCANNER_UNAVAILABLE = _r(451, "4.7.1", "virus scanner unavailable, try again later")
# Permanent: bigger than clamd accepts in one stream; retrying cannot help. Only reachable
# when clamd's StreamMaxLength is below the message size setting (filters/clamd.py).
VIRUS_TOO_BIG_TO_SCAN = _r(552, "5.3.4", "message too big to be scanned for viruses")
SPAM_REFUSED = _r(550, "5.7.1", "message refused: judged to be spam (score {score:.1f})")


def _name_all() -> None:
    """Give every reply in the table its own name (used as the rule name in logs)."""
    for key, value in list(globals().items()):
        if isinstance(value, Reply) and not value.name:
            globals()[key] = replace(value, name=key)


_name_all()


# Outbound rate limits (issue 19): 451 4.7.1, as Postfix's policy services answer a sender
# over its rate (the client keeps the message and tries again later).
RATE_LIMIT_MESSAGES = _r(451, "4.7.1", "{key} is over its limit of {limit} messages per hour; "
                                       "try again later")
RATE_LIMIT_RECIPIENTS = _r(451, "4.7.1", "{key} is over its limit of {limit} recipients per "
                                         "hour; try again later")
RATE_LIMIT_DOMAIN = _r(451, "4.7.1", "{key} is over its limit of {limit} messages per hour "
                                     "for the whole domain; try again later")
_name_all()
