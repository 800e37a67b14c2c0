"""Value types of the settings registry: parse text into a typed value, or refuse it clearly."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..address import ATEXT, MAX_LOCAL_PART, is_hostname


class SettingError(ValueError):
    """A refused value: names the setting, the value given and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}: {value!r} is not allowed; {allowed}")


class ItemError(ValueError):
    """A refused item of a list setting (the caller adds the line number and setting name)."""


# Control characters never belong in a setting: they would end a config line or a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOCALPART = re.compile(rf"[{ATEXT}.]{{1,{MAX_LOCAL_PART}}}")


@dataclass(frozen=True)
class SettingType:
    """Base of every type; `describe` says what is allowed, in words an administrator reads."""

    def parse(self, key: str, text: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Int(SettingType):
    minimum: int = 0
    maximum: int = 2**31 - 1
    unit: str = ""

    def parse(self, key: str, text: str) -> int:
        text = str(text).strip()
        if not re.fullmatch(r"[+-]?\d{1,12}", text):
            raise SettingError(key, text, self.describe())
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise SettingError(key, text, self.describe())
        return value

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"a whole number from {self.minimum} to {self.maximum}{unit}"


@dataclass(frozen=True)
class Number(SettingType):
    minimum: float = -1000.0
    maximum: float = 1000.0

    def parse(self, key: str, text: str) -> float:
        text = str(text).strip()
        if not re.fullmatch(r"[+-]?\d{1,6}(\.\d{1,4})?", text):
            raise SettingError(key, text, self.describe())
        value = float(text)
        if not self.minimum <= value <= self.maximum:
            raise SettingError(key, text, self.describe())
        return value

    def format(self, value: Any) -> str:
        return f"{float(value):g}"

    def describe(self) -> str:
        return f"a number from {self.minimum:g} to {self.maximum:g}"


_TRUE = {"on", "yes", "true", "1", "enabled"}
_FALSE = {"off", "no", "false", "0", "disabled"}


@dataclass(frozen=True)
class Bool(SettingType):
    def parse(self, key: str, text: str) -> bool:
        if isinstance(text, bool):
            return text
        word = str(text).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise SettingError(key, text, self.describe())

    def format(self, value: Any) -> str:
        return "on" if value else "off"

    def describe(self) -> str:
        return "on or off (also yes/no, true/false, 1/0)"


@dataclass(frozen=True)
class Text(SettingType):
    """One line of printable text; `pattern` narrows it further (e.g. a hostname)."""

    max_length: int = 200
    allow_empty: bool = False
    pattern: str | None = None
    pattern_words: str = ""

    def parse(self, key: str, text: str) -> str:
        value = str(text)
        if _CONTROL.search(value):
            raise SettingError(key, text, self.describe() + " (no line breaks or control characters)")
        value = value.strip()
        if not value and not self.allow_empty:
            raise SettingError(key, text, self.describe() + " (it may not be empty)")
        if len(value) > self.max_length:
            raise SettingError(key, text, self.describe())
        if value and self.pattern and not re.fullmatch(self.pattern, value):
            raise SettingError(key, text, self.describe())
        return value

    def describe(self) -> str:
        what = self.pattern_words or "one line of text"
        return f"{what}, at most {self.max_length} characters"


# Characters a directory setting may have: it is written unquoted into generated configurations
# (mda/config.py's safe_path allows the same set), and % is left out because Dovecot expands
# %-variables in the paths it is given (mail_home).
_DIRECTORY = re.compile(r"/[A-Za-z0-9_.,:/@+=~-]*")


@dataclass(frozen=True)
class Directory(SettingType):
    """An absolute directory path, written back without repeated or trailing slashes; empty
    (when allowed) means the default place, which `empty_words` names."""

    max_length: int = 200
    allow_empty: bool = True
    empty_words: str = "the default"

    def parse(self, key: str, text: str) -> str:
        raw = str(text)
        if _CONTROL.search(raw):
            raise SettingError(key, text, self.describe())
        value = raw.strip()
        if not value:
            if self.allow_empty:
                return ""
            raise SettingError(key, text, self.describe() + " (it may not be empty)")
        if not value.startswith("/"):
            raise SettingError(key, text, self.describe() + " (it must start with /)")
        if not _DIRECTORY.fullmatch(value):
            raise SettingError(key, text, self.describe())
        parts = [part for part in value.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise SettingError(key, text, self.describe() + " (no . or .. in it)")
        if not parts:
            raise SettingError(key, text, self.describe() + " (not / itself)")
        value = "/" + "/".join(parts)
        if len(value) > self.max_length:
            raise SettingError(key, text, self.describe())
        return value

    def describe(self) -> str:
        empty = f", or empty for {self.empty_words}" if self.allow_empty else ""
        return (f"an absolute directory path such as /srv/mail, at most {self.max_length} "
                "characters, of letters, digits and _ . , : / @ + = ~ - (no spaces, no %)"
                + empty)


@dataclass(frozen=True)
class IPAddress(SettingType):
    """One IPv4 or IPv6 address, parsed as one (ipaddress), written back in its short form.

    With `with_port`, `ADDRESS@PORT` is allowed too (the port from 1 to 65535): the @ keeps
    an IPv6 address's colons apart from the port. A character class is not enough here:
    127.0.0.1:5353 is made of address characters and is no address."""

    allow_empty: bool = True
    with_port: bool = False

    def parse(self, key: str, text: str) -> str:
        value = str(text).strip()
        if not value and self.allow_empty:
            return ""
        if _CONTROL.search(value) or "%" in value or len(value) > 100:
            raise SettingError(key, text, self.describe())
        address, at, port = value.rpartition("@") if self.with_port else ("", "", "")
        if not at:
            address, port = value, ""
        try:
            parsed = ipaddress.ip_address(address.strip("[]") if at else address)
        except ValueError:
            hint = (" (a port goes after @, e.g. 127.0.0.1@5353)"
                    if self.with_port and ":" in value and "." in value else "")
            raise SettingError(key, text, self.describe() + hint) from None
        if not at:
            return str(parsed)
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise SettingError(key, text, self.describe() + f" ({port!r} is not a port)")
        return f"{parsed}@{int(port)}"

    def describe(self) -> str:
        what = "an IP address such as 192.0.2.1 or 2001:db8::1"
        if self.with_port:
            what += ", optionally followed by @PORT (1 to 65535), e.g. 127.0.0.1@5353"
        return what + (", or empty" if self.allow_empty else "")


@dataclass(frozen=True)
class Hostname(SettingType):
    allow_empty: bool = False

    def parse(self, key: str, text: str) -> str:
        value = str(text).strip().lower().rstrip(".")
        if not value and self.allow_empty:
            return ""
        if not is_hostname(value):
            raise SettingError(key, text, self.describe())
        return value

    def describe(self) -> str:
        return "a host or domain name such as mail.example.com (letters, digits, hyphens, dots)"


@dataclass(frozen=True)
class Choice(SettingType):
    choices: tuple[tuple[str, str], ...] = ()

    def parse(self, key: str, text: str) -> str:
        value = str(text).strip()
        if value not in self.values:
            raise SettingError(key, text, self.describe())
        return value

    @property
    def values(self) -> list[str]:
        return [value for value, _ in self.choices]

    def label(self, value: str) -> str:
        return dict(self.choices).get(value, value)

    def describe(self) -> str:
        return "one of: " + ", ".join(self.values)


@dataclass(frozen=True)
class Lines(SettingType):
    """A list, one item per line; blank lines and `#` comments are dropped."""

    item: Callable[[str], str] = field(default=lambda s: s)
    item_words: str = "one item per line"
    max_items: int = 1000

    def parse(self, key: str, text: str | list[str]) -> list[str]:
        raw = text if isinstance(text, list) else str(text).replace("\r\n", "\n").split("\n")
        items: list[str] = []
        for number, line in enumerate(raw, start=1):
            line = str(line).strip()
            if not line or line.startswith("#"):
                continue
            if _CONTROL.search(line):
                raise SettingError(key, line, f"line {number}: no control characters; {self.item_words}")
            try:
                items.append(self.item(line))
            except ItemError as exc:
                raise SettingError(key, line, f"line {number}: {exc}; {self.item_words}") from None
        if len(items) > self.max_items:
            raise SettingError(key, f"{len(items)} items", f"at most {self.max_items} items")
        return items

    def format(self, value: Any) -> str:
        return "\n".join(value)

    def describe(self) -> str:
        return self.item_words


# ---- item validators for list settings -------------------------------------------------------


def network_item(line: str) -> str:
    try:
        return str(ipaddress.ip_network(line, strict=False))
    except ValueError:
        raise ItemError(f"{line!r} is not a network "
                        "(write 192.0.2.0/24, 2001:db8::/32 or one address)") from None


def hostname_item(line: str) -> str:
    value = line.lower().rstrip(".")
    if not is_hostname(value):
        raise ItemError(f"{line!r} is not a host name")
    return value


def address_pattern_item(line: str) -> str:
    """An envelope address pattern: `user@domain`, `@domain` (whole domain) or a glob with * and ?."""
    value = line.lower()
    if len(value) > 320 or " " in value or "\t" in value:
        raise ItemError(f"{line!r} is not an address pattern")
    if "@" not in value:
        raise ItemError(f"{line!r} has no @ (write user@domain, @domain or a pattern like *@domain)")
    if re.search(r"[<>\"\\,;()\[\]]", value):
        raise ItemError(f"{line!r} contains a character that cannot appear in an address")
    return value


def spam_address_item(line: str) -> str:
    """SpamAssassin list entry: `user@domain`, `*@domain` or `*@*.domain` (its own glob syntax)."""
    value = line.lower()
    if not re.fullmatch(r"[a-z0-9!#$%&'*+/=?^_`{|}~.?-]{1,64}@[a-z0-9*?.-]{1,253}", value):
        raise ItemError(f"{line!r} is not an address or *@domain pattern")
    return value


def smtp_route_item(line: str) -> str:
    """One route of the guide's 4.6.1: `DOMAIN:RELAY[:PORT]`, DOMAIN empty or `.domain`, RELAY empty."""
    if " " in line or "\t" in line:
        raise ItemError(f"{line!r} contains spaces (a route is DOMAIN:RELAY without spaces)")
    if ":" not in line:
        raise ItemError(f"{line!r} has no colon (write DOMAIN:RELAY or DOMAIN:RELAY:PORT)")
    domain, _, rest = line.partition(":")
    if domain:
        bare = domain[1:] if domain.startswith(".") else domain
        if not is_hostname(bare):
            raise ItemError(f"{line!r}: {domain!r} is not a domain")
    relay, _, port = rest.partition(":")
    if relay:
        host = relay[1:-1] if relay.startswith("[") and relay.endswith("]") else relay
        if not is_hostname(host):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ItemError(f"{line!r}: {relay!r} is not a host name or address") from None
    elif port:
        raise ItemError(f"{line!r}: a port needs a relay")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ItemError(f"{line!r}: {port!r} is not a port from 1 to 65535")
    return line.lower()


def local_part_or_address_item(line: str) -> str:
    if not (_LOCALPART.fullmatch(line) or "@" in line):
        raise ItemError(f"{line!r} is not a user name or address")
    return line.lower()


def own_address_item(line: str) -> str:
    """An address that reaches this node: `ADDRESS` (any port), `IPv4:PORT` or `[IPv6]:PORT`."""
    if line.startswith("["):
        address, close, rest = line[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ItemError(f"{line!r} is not [IPv6]:PORT")
        port = rest[1:] if rest else None
    elif line.count(":") == 1:
        address, _, port = line.partition(":")
    else:
        address, port = line, None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ItemError(f"{address!r} is not an IP address") from None
    if port is None:
        return str(ip)
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ItemError(f"{port!r} is not a port from 1 to 65535")
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


TLS_POLICY_LEVELS: tuple[str, ...] = ("none", "may", "encrypt", "verify")


def tls_policy_item(line: str) -> str:
    """`NEXTHOP LEVEL`: a domain, `.domain` (its subdomains) or a relay's name or address,
    and one of none, may, encrypt, verify."""
    parts = line.split()
    if len(parts) != 2:
        raise ItemError(f"{line!r} is not NEXTHOP LEVEL (two words)")
    key, level = parts[0].lower().rstrip("."), parts[1].lower()
    if level not in TLS_POLICY_LEVELS:
        raise ItemError(f"{parts[1]!r} is not one of {', '.join(TLS_POLICY_LEVELS)}")
    bare = key[1:] if key.startswith(".") else key
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if not is_hostname(bare):
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            raise ItemError(f"{parts[0]!r} is not a domain, .domain or relay address") from None
    return f"{key} {level}"


# The smtp.dns_resolver value as the DNS clients of smtp, delivery and mailauth use it (read
# here, beside the IPAddress type that accepted it, so that no part imports another's).
def parse_resolver_setting(spec: str) -> tuple[str, int] | None:
    """("IP", port) of a smtp.dns_resolver value, None for the system's resolvers."""
    spec = spec.strip()
    if not spec:
        return None
    address, at, port = spec.rpartition("@")
    if not at:
        address, port = spec, "53"
    ipaddress.ip_address(address)  # ValueError names a bad address
    return address, int(port)
