"""The one address grammar of mailyard: envelope paths, ESMTP parameters, host names and the
pieces other modules build their checks from (RFC 5321 4.1.2, 4.1.3; RFC 5322 3.2.3).

A leaf module (standard library only): the SMTP machine, the store, the settings types, the
spam preferences and lists all import their patterns from here instead of writing their own.

`parse_path_argument("<user@example.org> SIZE=100")` gives a `Path` and the parameters. The
parser is strict about what could smuggle anything (controls, CR, LF, non-ASCII, lengths) and
lenient where common clients differ from the RFC (a space after the colon, no angle brackets).
Routing syntax (`%`, `!`, `@` inside the local part, source routes) is parsed, not refused,
so that policy can name the trick it refuses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

# RFC 5321 4.5.3.1.1-3: local part 64 octets, domain 255 octets, path 256 octets with brackets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"  # RFC 5322 3.2.3 atext, as a class body
ATEXT = _ATEXT
# The atext a mailbox's local part may use in the store: lower case (the store folds case)
# and no "/" (a local part names a directory under mail/<domain>/).
MAILBOX_ATEXT = r"a-z0-9!#$%&'*+=?^_`{|}~\-"
MAILBOX_LOCAL = re.compile(rf"[{MAILBOX_ATEXT}]+(\.[{MAILBOX_ATEXT}]+)*")
# One DNS label (RFC 1035 2.3.1, RFC 1123 2.1: 63 octets, letters, digits, inner hyphens) and a
# host name of such labels (RFC 1035 2.3.4: 253 characters written without the final dot).
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
MAX_HOSTNAME = 253
HOSTNAME = re.compile(rf"(?=.{{1,{MAX_HOSTNAME}}}$){LABEL}(?:\.{LABEL})*")
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(\.[{_ATEXT}]+)*")
# The same with "@" allowed, only to recognise `user@other@local` as a routing trick.
_DOT_STRING_AT = re.compile(rf"[{_ATEXT}]+([.@][{_ATEXT}]+)*")
_QUOTED = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_LABEL = re.compile(LABEL)
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_PARAM_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")  # esmtp-value: no SP, no "="


def is_hostname(text: str) -> bool:
    """Whether text is a host name: dot-separated DNS labels, no final dot."""
    return bool(HOSTNAME.fullmatch(text))


class AddressError(ValueError):
    """A path or parameter that does not follow the grammar; the text says what is wrong."""


@dataclass(frozen=True)
class Path:
    """An envelope path: `<>` (empty local and domain) or local@domain, maybe source-routed."""

    local: str  # as written, quotes included
    domain: str  # lower case; "" when the client gave a bare local part
    source_route: str = ""  # "@a.example,@b.example" when given (RFC 5321 C)
    quoted: bool = False

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain

    @property
    def address(self) -> str:
        if self.is_null:
            return ""
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def unquoted_local(self) -> str:
        if not self.quoted:
            return self.local
        return re.sub(r"\\(.)", r"\1", self.local[1:-1])

    @property
    def canonical_local(self) -> str:
        """The local part in its one canonical spelling (see `canonical`)."""
        return canonical_local_part(self.unquoted_local)

    @property
    def canonical(self) -> str:
        """The address in its one canonical spelling (see `canonical`); "" for `<>`."""
        if self.is_null:
            return ""
        local = self.canonical_local
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def names_local_mailbox(self) -> bool:
        """Whether the local part could be a mailbox of ours: a dot-atom once canonical.
        Quoted local parts that stay quoted (spaces, specials) never can."""
        return bool(self.local) and not self.canonical_local.startswith('"')

    def with_domain(self, domain: str) -> Path:
        return Path(self.local, domain.lower(), self.source_route, self.quoted)

    def __str__(self) -> str:
        return f"<{self.address}>"


def canonical_local_part(unquoted: str) -> str:
    """A local part (quotes already removed) spelled canonically: as a dot-atom when it is one,
    else in quotes with only `"` and `\\` escaped (RFC 5321 4.1.2 Quoted-string)."""
    if _DOT_STRING.fullmatch(unquoted):
        return unquoted
    return '"' + re.sub(r'(["\\])', r"\\\1", unquoted) + '"'


def canonical(address: str) -> str:
    """The one canonical spelling of an envelope address, used for every comparison of
    addresses: the store's lookups, the blacklists, the spam preferences and the queue.

    Contract:
    - the input is an envelope address as written after MAIL FROM:/RCPT TO: (angle brackets
      optional, a source route is dropped as RFC 5321 C allows); "" or "<>" gives "";
    - the domain is lower case; the local part keeps its case (RFC 5321 2.4: only the
      receiving host may fold it; our store folds it when it looks a mailbox up);
    - a quoted local part that is equivalent to a dot-atom is written without quotes
      (`"joe"@example.com` -> `joe@example.com`, `"j\\oe"` -> `joe`); any other keeps its quotes,
      with only `"` and `\\` escaped inside (`" joe"@example.com` stays
      `" joe"@example.com`), so it can never equal a mailbox's address;
    - nothing is trimmed: spaces outside quotes, controls and non-ASCII raise AddressError;
    - canonical(canonical(a)) == canonical(a).
    """
    text = address
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    path = parse_mailbox(text)
    return path.canonical


def lookup_key(address: str) -> str | None:
    """How the store keys an address of ours: canonical and lower case; None when the address
    is not valid or cannot name a mailbox here (a local part that stays quoted)."""
    try:
        text = address[1:-1] if address.startswith("<") and address.endswith(">") else address
        path = parse_mailbox(text)
    except AddressError:
        return None
    if path.is_null or not path.domain or not path.names_local_mailbox:
        return None
    return path.canonical.lower()


def _check_ascii(text: str) -> None:
    if text.isascii() and text.isprintable():  # 0x20-0x7E only: the usual case, in C
        return
    for ch in text:
        if ch in "\r\n":
            raise AddressError("a CR or LF inside an address")
        if ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise AddressError(f"character {ch!r} is not allowed in an address "
                               "(printable ASCII only; SMTPUTF8 is not offered)")


def parse_domain(text: str) -> str:
    """A domain name or an address literal ([192.0.2.1], [IPv6:2001:db8::1]), lower case."""
    if not text:
        raise AddressError("the domain is empty")
    if len(text) > MAX_DOMAIN:
        raise AddressError(f"the domain is longer than {MAX_DOMAIN} octets")
    if text.startswith("["):
        if not text.endswith("]"):
            raise AddressError(f"address literal {text} is not closed with ]")
        inner = text[1:-1]
        try:
            if inner.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(inner[5:])
            else:
                ipaddress.IPv4Address(inner)
        except ValueError:
            raise AddressError(f"{text} is not an IPv4 or IPv6 address literal") from None
        return text.lower()
    labels = text.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"{text!r} is not a domain name (letters, digits, hyphens, dots)")
    return text.lower()


def _unquoted(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, character) of each character of `text` from `start` that is outside a quoted
    string (RFC 5321 4.1.2: a backslash inside quotes escapes the next character); raises
    AddressError at the end when a quoted string is left open."""
    in_quotes = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\" and in_quotes:
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes:
            yield i, ch
    if in_quotes:
        raise AddressError("a quoted local part is not closed")


def _split_mailbox(text: str) -> tuple[str, str | None]:
    """Split at the last @ that is not inside a quoted string."""
    if '"' not in text:  # nothing quoted: the last @ is the one
        local, at_sign, domain = text.rpartition("@")
        return (local, domain) if at_sign else (text, None)
    at = -1
    for i, ch in _unquoted(text):
        if ch == "@":
            at = i
    if at < 0:
        return text, None
    return text[:at], text[at + 1 :]


def parse_mailbox(text: str) -> Path:
    """The inside of the angle brackets: empty, [route:]local@domain, or a bare local part."""
    _check_ascii(text)
    if len(text) + 2 > MAX_PATH:
        raise AddressError(f"the path is longer than {MAX_PATH} octets")
    if not text:
        return Path("", "")
    route = ""
    if text.startswith("@"):
        route, colon, text = text.partition(":")
        if not colon:
            raise AddressError("a source route must end with ':'")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise AddressError(f"source route hop {hop!r} must start with @")
            parse_domain(hop[1:])
    local, domain = _split_mailbox(text)
    if not local:
        raise AddressError("the local part is empty")
    if len(local) > MAX_LOCAL_PART:
        raise AddressError(f"the local part is longer than {MAX_LOCAL_PART} octets")
    quoted = local.startswith('"')
    if quoted:
        if not _QUOTED.fullmatch(local):
            raise AddressError(f"{local} is not a valid quoted local part")
    elif not _DOT_STRING_AT.fullmatch(local):
        raise AddressError(f"{local!r} is not a valid local part")
    return Path(local, parse_domain(domain) if domain is not None else "", route, quoted)


def _take_bracketed(arg: str) -> tuple[str, str]:
    """`<...>` at the start of arg (quotes respected): (inside, rest)."""
    if '"' not in arg:  # nothing quoted: the first > closes it
        end = arg.find(">", 1)
        if end >= 0:
            return arg[1:end], arg[end + 1 :]
        raise AddressError("the path has no closing >")
    try:
        for i, ch in _unquoted(arg, 1):
            if ch == ">":
                return arg[1:i], arg[i + 1 :]
    except AddressError:
        pass  # a quote left open hides the closing >
    raise AddressError("the path has no closing >")


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters `KEY[=VALUE]` separated by spaces (RFC 5321 4.1.2); keys upper-cased."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _PARAM_KEY.fullmatch(key):
            raise AddressError(f"{item!r} is not a parameter (KEYWORD or KEYWORD=VALUE)")
        if eq and not _PARAM_VALUE.fullmatch(value):
            raise AddressError(f"parameter {key} has an invalid value")
        params[key.upper()] = value if eq else None
    return params


def parse_path_argument(arg: str) -> tuple[Path, dict[str, str | None]]:
    """What follows `MAIL FROM:` or `RCPT TO:`: a path, then optional parameters."""
    _check_ascii(arg)
    arg = arg.lstrip(" ")
    if arg.startswith("<"):
        inside, rest = _take_bracketed(arg)
        if rest and not rest.startswith(" "):
            raise AddressError("a space must separate the path from its parameters")
    else:
        # Lenient, as qmail and Postfix are by default: a path written without brackets.
        inside, _, rest = arg.partition(" ")
        if not inside:
            raise AddressError("no address given")
    return parse_mailbox(inside), parse_params(rest)
