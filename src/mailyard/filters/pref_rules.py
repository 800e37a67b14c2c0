"""What a SpamAssassin preference may be (guide 6.1.4): the allow-list, each value's check, the
scopes, the config lines a stored row renders to, and the stored rows as read back.

The grammar side of `filters.prefs`: spamd's renderer reads from here, and `filters.prefs`
(which changes rows and then re-renders spamd) sits above both, so no cycle joins them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..address import is_hostname
from ..spam_lists import ADDRESS_GLOB, SPAM_LIST_WORDS, SpamListError, spam_list_line
from ..store.accounts import AccountError, mail_key, split_address
from ..store.cache import read_scope
from ..store.models import SpamPreference

if TYPE_CHECKING:
    from ..home import Home

# A preference's value is one line of SpamAssassin config; 500 characters is more than any
# legitimate preference needs (the longest are rule patterns) and bounds what reaches Perl.
MAX_VALUE_LENGTH = 500
# SpamAssassin rule names: letters, digits, underscore, up to 100 (its own limit is laxer).
RULE_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,99}"


class PreferenceError(ValueError):
    """A preference, scope or value that is not allowed; the message says why and what is."""


# ---- value checks ------------------------------------------------------------------------------
# Each takes the value (already stripped, one line, printable) and returns it normalised, or
# raises PreferenceError with the reason.

def _bool01(value: str) -> str:
    if value not in ("0", "1"):
        raise PreferenceError("must be 0 (off) or 1 (on)")
    return value


def _number(low: float, high: float) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            number = float(value)
        except ValueError:
            raise PreferenceError(f"must be a number from {low:g} to {high:g}") from None
        if not low <= number <= high:
            raise PreferenceError(f"must be a number from {low:g} to {high:g}")
        return value
    return check


def _integer(low: int, high: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(r"-?\d+", value) or not low <= int(value) <= high:
            raise PreferenceError(f"must be a whole number from {low} to {high}")
        return str(int(value))
    return check


def _choice(*options: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in options:
            raise PreferenceError("must be one of " + ", ".join(options))
        return value
    return check


def _addresses(value: str) -> str:
    """One or more addresses, domains or SpamAssassin globs (*@example.com), separated by
    spaces; domains become the globs SpamAssassin understands (see `spam_list_globs`)."""
    try:
        return spam_list_line(value)
    except SpamListError as exc:
        raise PreferenceError(f"{exc}; write {SPAM_LIST_WORDS}") from None


def _address_and_domain(value: str) -> str:
    """welcomelist_from_rcvd: an address pattern and the relay's domain."""
    parts = value.split()
    if len(parts) != 2 or not ADDRESS_GLOB.fullmatch(parts[0]) or not re.fullmatch(
            r"[A-Za-z0-9.-]{1,253}", parts[1]):
        raise PreferenceError("must be an address pattern and a relay domain, "
                              "e.g. *@example.com example.com")
    return " ".join(parts)


def _words(pattern: str, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        items = value.split()
        if not items or not all(re.fullmatch(pattern, item) for item in items):
            raise PreferenceError(f"must be {what}, separated by spaces")
        return " ".join(items)
    return check


# Template text in headers: SpamAssassin's _TAGS_ are fine; nothing that looks like config.
_HEADER_TEXT = re.compile(r"[ -~]{0,300}")


def _rewrite_header(value: str) -> str:
    name, _, text = value.partition(" ")
    if name.lower() not in ("subject", "from", "to"):
        raise PreferenceError("must be Subject, From or To followed by the text to put in "
                              "front, e.g. Subject [SPAM]")
    if not _HEADER_TEXT.fullmatch(text.strip()):
        raise PreferenceError("the text must be plain printable ASCII, up to 300 characters")
    return f"{name.capitalize()} {text.strip()}".rstrip()


def _add_header(value: str) -> str:
    parts = value.split(None, 2)
    if len(parts) < 3 or parts[0] not in ("spam", "ham", "all"):
        raise PreferenceError("must be spam|ham|all, a header name and its text, e.g. "
                              "all Level _STARS(*)_")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,60}", parts[1]):
        raise PreferenceError(f"{parts[1]!r} is not a header name (letters, digits, -)")
    if not _HEADER_TEXT.fullmatch(parts[2]):
        raise PreferenceError("the text must be plain printable ASCII, up to 300 characters")
    return " ".join(parts)


def _remove_header(value: str) -> str:
    parts = value.split()
    if len(parts) != 2 or parts[0] not in ("spam", "ham", "all") or not re.fullmatch(
            r"[A-Za-z0-9-]{1,60}", parts[1]):
        raise PreferenceError("must be spam|ham|all and a header name, e.g. all Level")
    return " ".join(parts)


def _score(value: str) -> str:
    parts = value.split()
    if not 2 <= len(parts) <= 5 or not re.fullmatch(RULE_NAME, parts[0]):
        raise PreferenceError("must be a rule name and one or four scores, e.g. "
                              "BAYES_99 4.5")
    if len(parts) not in (2, 5):
        raise PreferenceError("must be a rule name and one or four scores, e.g. "
                              "BAYES_99 4.5")
    for number in parts[1:]:
        try:
            score = float(number)
        except ValueError:
            raise PreferenceError(f"{number!r} is not a score (a number)") from None
        if not -1000 <= score <= 1000:
            raise PreferenceError(f"{number!r} is outside -1000..1000")
    return " ".join(parts)


# A pattern as SpamAssassin writes it: /.../flags or m{...}flags. Perl could run code from
# (?{ }) and (??{ }) groups and reach the outside world through (*...) verbs; all three are
# refused, and so is interpolation ($ or @ followed by a name or brace) which SA would expand.
_PATTERN = re.compile(r"(?:/(?P<slash>.*)/|m\{(?P<brace>.*)\})(?P<flags>[imsx]*)")
_FORBIDDEN_IN_PATTERN = (
    (re.compile(r"\(\?\??\{"), "code blocks (?{ }) are not allowed"),
    (re.compile(r"\(\*"), "(* ) verbs are not allowed"),
    (re.compile(r"(?<!\\)[$@][{A-Za-z_]"), "variables ($name, @name) are not allowed"),
)


def _pattern(text: str) -> str:
    m = _PATTERN.fullmatch(text)
    if not m:
        raise PreferenceError("the pattern must be written /regex/flags (flags i, m, s, x)")
    body = m.group("slash") if m.group("slash") is not None else m.group("brace")
    if not body:
        raise PreferenceError("the pattern is empty")
    for forbidden, reason in _FORBIDDEN_IN_PATTERN:
        if forbidden.search(body):
            raise PreferenceError(f"the pattern is refused: {reason}")
    try:
        re.compile(body)  # Python's engine is close enough to reject most broken patterns
    except re.error as exc:
        raise PreferenceError(f"the pattern does not compile: {exc}") from None
    return text


def _rule_with_pattern(value: str) -> str:
    name, _, pattern = value.partition(" ")
    if not re.fullmatch(RULE_NAME, name):
        raise PreferenceError("must start with a rule name (letters, digits, _), e.g. "
                              "LOCAL_PILLS /cheap pills/i")
    pattern = pattern.strip()
    if pattern.startswith("eval:"):
        raise PreferenceError("eval: tests are not allowed; write a /pattern/")
    return f"{name} {_pattern(pattern)}"


def _header_rule(value: str) -> str:
    m = re.fullmatch(rf"({RULE_NAME})\s+([A-Za-z0-9-]{{1,60}}(?::(?:raw|addr|name))?)\s+"
                     r"(=~|!~)\s+(.+?)(?:\s+\[if-unset:\s*[ -~]{0,60}\])?", value)
    if not m:
        raise PreferenceError("must be RULE_NAME Header =~ /pattern/flags, e.g. "
                              "LOCAL_FROM_X From =~ /x\\.example/i")
    _pattern(m.group(4))
    return value


def _describe(value: str) -> str:
    name, _, text = value.partition(" ")
    if not re.fullmatch(RULE_NAME, name) or not _HEADER_TEXT.fullmatch(text.strip()):
        raise PreferenceError("must be a rule name and a short description in plain ASCII")
    return f"{name} {text.strip()}"


_META_TOKEN = re.compile(rf"\s*(?:{RULE_NAME}|\d+(?:\.\d+)?|&&|\|\||[!()+*<>=-]|>=|<=|==)")


def _meta(value: str) -> str:
    name, _, expression = value.partition(" ")
    if not re.fullmatch(RULE_NAME, name) or not expression.strip():
        raise PreferenceError("must be a rule name and an expression of rule names with "
                              "&& || ! ( ) and numbers")
    rest = expression
    while rest.strip():
        m = _META_TOKEN.match(rest)
        if not m:
            raise PreferenceError(f"the expression is refused at {rest.strip()[:20]!r}: only "
                                  "rule names, numbers, && || ! ( ) + * < > = are allowed")
        rest = rest[m.end():]
    return f"{name} {expression.strip()}"


@dataclass(frozen=True)
class Allowed:
    check: Callable[[str], str]
    example: str
    site_only: bool = False  # rule definitions: global scope only (see the module's doc)


ALLOWED: dict[str, Allowed] = {
    # scoring and marking
    "required_score": Allowed(_number(0, 1000), "5.0"),
    "rewrite_header": Allowed(_rewrite_header, "Subject [SPAM]"),
    "report_safe": Allowed(_choice("0", "1", "2"), "1"),
    "add_header": Allowed(_add_header, "all Level _STARS(*)_"),
    "remove_header": Allowed(_remove_header, "all Level"),
    "fold_headers": Allowed(_bool01, "1"),
    "score": Allowed(_score, "BAYES_99 4.5"),
    # access lists (the SpamAssassin 4 names and their older aliases)
    **{name: Allowed(_addresses, "*@example.com") for name in (
        "welcomelist_from", "whitelist_from", "unwelcomelist_from", "unwhitelist_from",
        "blocklist_from", "blacklist_from", "unblocklist_from", "unblacklist_from",
        "welcomelist_to", "whitelist_to", "blocklist_to", "blacklist_to",
        "more_spam_to", "all_spam_to", "welcomelist_auth", "whitelist_auth")},
    "welcomelist_from_rcvd": Allowed(_address_and_domain, "*@example.com example.com"),
    "whitelist_from_rcvd": Allowed(_address_and_domain, "*@example.com example.com"),
    # Bayes and auto-welcomelist behaviour
    "use_bayes": Allowed(_bool01, "1"),
    "use_bayes_rules": Allowed(_bool01, "1"),
    "bayes_auto_learn": Allowed(_bool01, "1"),
    "bayes_auto_learn_threshold_nonspam": Allowed(_number(-1000, 1000), "0.1"),
    "bayes_auto_learn_threshold_spam": Allowed(_number(-1000, 1000), "12.0"),
    "bayes_min_ham_num": Allowed(_integer(1, 100000), "200"),
    "bayes_min_spam_num": Allowed(_integer(1, 100000), "200"),
    "use_auto_welcomelist": Allowed(_bool01, "1"),
    "use_auto_whitelist": Allowed(_bool01, "1"),
    "auto_welcomelist_factor": Allowed(_number(0, 1), "0.5"),
    "auto_whitelist_factor": Allowed(_number(0, 1), "0.5"),
    # languages and character sets
    "ok_locales": Allowed(_words(r"all|en|ja|ko|ru|th|zh", "locale codes (en ja ko ru th "
                                 "zh) or all"), "en"),
    # network tests, for nodes that have DNS and outside access
    "skip_rbl_checks": Allowed(_bool01, "0"),
    "dns_available": Allowed(_choice("yes", "no"), "yes", site_only=True),
    "report_contact": Allowed(_words(r"[ -~]{1,100}", "plain text"), "postmaster@example.com"),
    # rule definitions: site-wide only
    "header": Allowed(_header_rule, "LOCAL_X From =~ /x\\.example/i", site_only=True),
    "body": Allowed(_rule_with_pattern, "LOCAL_PILLS /cheap pills/i", site_only=True),
    "rawbody": Allowed(_rule_with_pattern, "LOCAL_RAW /cheap pills/i", site_only=True),
    "full": Allowed(_rule_with_pattern, "LOCAL_FULL /cheap pills/i", site_only=True),
    "uri": Allowed(_rule_with_pattern, "LOCAL_URI /example\\.invalid/i", site_only=True),
    "describe": Allowed(_describe, "LOCAL_PILLS mentions cheap pills", site_only=True),
    "meta": Allowed(_meta, "LOCAL_BOTH LOCAL_PILLS && LOCAL_URI", site_only=True),
}


# ---- scopes --------------------------------------------------------------------------------------

def normalise_scope(scope: str) -> str:
    """`global`, `domain:NAME` or `mailbox:ADDRESS`, lowercased; PreferenceError otherwise."""
    text = scope.strip().lower()
    if text == "global":
        return text
    kind, _, target = text.partition(":")
    if kind == "domain" and is_hostname(target):
        return f"domain:{target}"
    if kind == "mailbox":
        # The one address grammar: canonical (as SMTP and the store key it), and a mailbox
        # name the store could hold (no quotes, no "/", no "..": it names a directory).
        key = mail_key(target)
        try:
            if key is not None and key == target and split_address(key):
                return f"mailbox:{key}"
        except AccountError:
            pass
    raise PreferenceError(f"scope {scope!r} is not allowed: use global, domain:example.com "
                          "or mailbox:user@example.com")


def validate(preference: str, value: str, scope: str = "global") -> tuple[str, str, str]:
    """(preference, value, scope) normalised, or PreferenceError naming what is wrong.

    The guide's table writes some preferences with their first argument ("rewrite_header
    subject" with value "--SPAM--"); that form is accepted and joined into the value.
    """
    scope = normalise_scope(scope)
    words = preference.strip().split()
    if not words:
        raise PreferenceError("the preference name is empty")
    name = words[0].lower()
    if name not in ALLOWED:
        raise PreferenceError(
            f"preference {preference.strip()!r} is not allowed; allowed are: "
            + ", ".join(sorted(ALLOWED)))
    if any(ch in value for ch in "\r\n\0") or any(ord(ch) < 32 and ch != "\t" for ch in value):
        raise PreferenceError(f"{name}: the value must be one line without control characters")
    if not value.isascii():
        raise PreferenceError(f"{name}: the value must be plain ASCII")
    joined = " ".join(words[1:] + [value.strip()]).strip()
    if len(joined) > MAX_VALUE_LENGTH:
        raise PreferenceError(f"{name}: the value is {len(joined)} characters long; "
                              f"at most {MAX_VALUE_LENGTH} are allowed")
    allowed = ALLOWED[name]
    if allowed.site_only and scope != "global":
        raise PreferenceError(f"{name}: rule definitions are allowed only with scope global "
                              f"(not {scope}); use `score` to change a rule for one "
                              "domain or mailbox")
    try:
        checked = allowed.check(joined)
    except PreferenceError as exc:
        raise PreferenceError(f"{name} {joined!r}: {exc} (example: {name} "
                              f"{allowed.example})") from None
    return name, checked, scope


def config_line(preference: str, value: str) -> str:
    """The line written into local.cf or user_prefs for a value `validate` returned."""
    return f"{preference} {value}"


# Written in place of a stored row that fails validation when rendered.
SKIPPED_LINE = "# a stored preference was left out: it does not pass validation"


def config_lines(prefs: list[tuple[str, str]], scope: str) -> list[str]:
    """The lines of stored (preference, value) rows of one scope, each validated again first.

    Rows were validated when stored, but the store is not to be trusted with what root
    renders into spamd's configuration (a row written by an older version, by hand, or by
    whoever reached the database): a row that fails today's rules is left out, with a
    comment in its place and a warning, and never reaches spamd."""
    lines: list[str] = []
    for preference, value in prefs:
        try:
            name, checked, _ = validate(preference, value, scope)
        except PreferenceError as exc:
            warning = re.sub(r"[\x00-\x1f\x7f]", "?", str(exc))[:300]
            print(f"mailyard: spam preference of {scope} left out: {warning}",
                  file=sys.stderr, flush=True)
            lines.append(SKIPPED_LINE)
            continue
        lines.append(config_line(name, checked))
    return lines


# ---- the store -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preference:
    id: int
    scope: str
    preference: str
    value: str


def list_preferences(home: Home, scope: str | None = None) -> list[Preference]:
    """Every stored preference (or those of one scope), in the order they are applied."""
    with read_scope(home) as session:
        query = select(SpamPreference).order_by(SpamPreference.id)
        if scope is not None:
            query = query.where(SpamPreference.scope == normalise_scope(scope))
        return [Preference(p.id, p.scope, p.preference, p.value)
                for p in session.scalars(query)]
