"""The MTA-level address blacklists: which entry, if any, an envelope address matches.

An entry is one of (guide 4.5; qmail's `badmailfrom` and the qregex patch InterWorx ships):

- `user@domain`: exactly that address (stock qmail `badmailfrom`), case-insensitive;
- `@domain`: every address at exactly that domain, not its subdomains (stock qmail); the
  older spelling `*@domain` means the same;
- anything else: a qregex pattern, a POSIX extended regular expression searched for anywhere
  in the address (anchor it with ^ and $ to match the whole address), case-insensitive. A
  pattern that starts with `!` is negated: the entry matches every address the rest of it does
  NOT match (`!@` matches an address without an @). Inside a bracket expression `!` is an
  ordinary character. `\\ ` is a space, so `.*\\ @.*` matches an address with a space before
  its @.

The null sender never matches (qregex 2004-02-07: empty senders are always accepted).

Patterns run on RE2 (the `google-re2` package) in its POSIX mode, which takes time linear in
the address whatever the pattern, so no entry can stall the SMTP server with backtracking.
Where RE2 and POSIX ERE differ we refuse rather than guess: back-references (`\\1`), Perl
classes (`\\d`, `\\w`, `\\s`), collating elements and equivalence classes (`[[.a.]]`,
`[[=a=]]`) and repetition counts above 1000 are refused with the reason. One difference is
accepted and documented: inside a bracket expression a backslash escapes the next character
(`[\\.]` is a dot), where POSIX would take the backslash itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import re2

# RFC 5321 4.5.3.1.3 bounds a path at 256 octets; a pattern four times that is already far
# longer than any administrator's entry, and it bounds the compiled program's size.
MAX_ENTRY = 1024

# RE2 refuses a program larger than this; 1 MiB is ample for a 1024-character pattern and
# keeps a thousand entries within a small, fixed share of the smtp server's memory.
MAX_PROGRAM_BYTES = 1 << 20

WHAT_IS_ALLOWED = ("user@domain, @domain, or a POSIX extended regular expression such as "
                   r".*@spam\.example (a leading ! negates it)")

# The characters of a plain local part that carry no regular-expression meaning besides the
# dot and plus, which a plain address takes literally (stock `badmailfrom` has no patterns).
_PLAIN_LOCAL = r"[a-z0-9._+=-]+"
_PLAIN_DOMAIN = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"
_PLAIN = re.compile(rf"(?:{_PLAIN_LOCAL}|\*)?@{_PLAIN_DOMAIN}", re.IGNORECASE)
# POSIX collating elements [. .] and equivalence classes [= =], which RE2 would misread.
_COLLATING = re.compile(r"\[([.=])[^\]]*?\1\]")


class EntryError(ValueError):
    """A refused blacklist entry; the message names the entry and the reason."""


def _canonical(address: str) -> str:
    """The form entries are matched against: the envelope address without angle brackets or
    quotes, as `smtp.policy` hands it over (the canonical address form plugs in here)."""
    return address


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re2._Regexp:  # noqa: SLF001 - the package's own type
    options = re2.Options()
    options.posix_syntax = True
    options.longest_match = True
    options.one_line = True  # ^ and $ are the ends of the address, as in POSIX regexec
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    options.max_mem = MAX_PROGRAM_BYTES
    return re2.compile(pattern, options)


def is_plain(entry: str) -> bool:
    """True for `user@domain`, `@domain` and `*@domain`: stock qmail's exact meaning."""
    return bool(_PLAIN.fullmatch(entry))


def _refusal(entry: str, reason: str) -> EntryError:
    return EntryError(f"'{entry}' is not a valid blacklist entry: {reason}")  # as written, unescaped


def check_entry(line: str) -> str:
    """One valid blacklist entry, kept as written (plain ones lower-cased), or EntryError."""
    entry = line
    if len(entry) > MAX_ENTRY:
        raise _refusal(entry[:40] + "...", f"longer than {MAX_ENTRY} characters")
    if is_plain(entry):
        return entry.lower()
    pattern = entry[1:] if entry.startswith("!") else entry
    if not pattern:
        raise _refusal(entry, "a lone ! negates nothing")
    if pattern.startswith("*"):
        raise _refusal(entry, "it starts with *, a glob and not a regular expression "
                       r"(write @domain, or a pattern such as .*@.*\.example\.com)")
    if _COLLATING.search(pattern):
        raise _refusal(entry, "collating elements and equivalence classes ([[.a.]], "
                       "[[=a=]]) are not supported")
    try:
        _compiled(pattern)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        if text.startswith("invalid escape sequence"):
            text += (" (POSIX has no \\d, \\w, \\s, \\b or back-references: write [0-9], "
                     "[[:alnum:]_] or [[:space:]])")
        raise _refusal(entry, text) from None
    return entry


def _plain_hit(entry: str, address: str) -> bool:
    local, _, domain = address.rpartition("@")
    wanted_local, _, wanted_domain = entry.lower().rpartition("@")
    if wanted_local in ("", "*"):
        return bool(local) and domain == wanted_domain
    return address == entry.lower()


def entry_matches(entry: str, address: str) -> bool:
    """Whether one (valid) entry matches a non-empty address."""
    if is_plain(entry):
        return _plain_hit(entry, address.lower())
    if entry.startswith("!"):
        return _compiled(entry[1:]).search(address) is None
    return _compiled(entry).search(address) is not None


def first_match(entries: Iterable[str], address: str) -> str | None:
    """The first entry matching the envelope address, or None; the null sender never matches."""
    if not address:
        return None
    subject = _canonical(address)
    for entry in entries:
        if entry_matches(entry, subject):
            return entry
    return None
