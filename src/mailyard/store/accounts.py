"""Service functions for domains, mailboxes, aliases and admins; the CLI and panel call these."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..address import MAILBOX_LOCAL, is_hostname, lookup_key
from ..home import Home as _Home
from ..mailboxes import ensure_maildir
from ..settings.registry import dkim_algorithms
from .cache import read_scope
from .db import session_scope
from .dkim_keys import add_first_keys
from .models import SPAM_ACTIONS, Admin, Alias, Domain, Mailbox
from .passwords import hash_password, verify_password
from .settings_store import load_settings

if TYPE_CHECKING:
    from ..home import Home


class AccountError(ValueError):
    """A refused account change; the message says what and why."""


# A domain's owner is a unix user name as Debian's useradd takes one by default
# (NAME_REGEX without the trailing "$" of machine accounts), at most 32 characters (its limit).
_OWNER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAX_OWNER_LENGTH = 32
OWNER_ALLOWED = (f"a unix user name: a lower-case letter or _, then lower-case letters, digits, "
                 f"_ or -, at most {MAX_OWNER_LENGTH} characters; empty for none")


def mail_key(address: str) -> str | None:
    """The key a mailbox or alias is stored under for an address that arrives with mail (the
    canonical form, lower case), or None when it cannot name one: nothing is trimmed, so
    `" joe"@example.com` or ` joe@example.com` never finds joe@example.com."""
    return lookup_key(address)


def split_address(address: str) -> tuple[str, str]:
    """Lowercased (local part, domain) of a plain address, or AccountError."""
    text = address.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not MAILBOX_LOCAL.fullmatch(local) or len(local) > 64:
        raise AccountError(f"{address!r} is not an address of the form user@domain")
    if not is_hostname(domain):
        raise AccountError(f"{address!r}: {domain!r} is not a domain name")
    return local, domain


@dataclass(frozen=True)
class MailboxInfo:
    address: str
    active: bool
    quota_mb: int
    spam_action: str


@dataclass(frozen=True)
class AliasInfo:
    source: str
    targets: list[str]
    keep_copy: bool


# ---- domains ------------------------------------------------------------------------------------


def add_domain(home: Home, name: str, owner: str = "") -> str:
    name = name.strip().lower().rstrip(".")
    if not is_hostname(name):
        raise AccountError(f"{name!r} is not a domain name (letters, digits, hyphens, dots)")
    check_owner(owner)
    algorithms = dkim_algorithms(load_settings(home)["dkim.algorithms"])
    with session_scope(home.db_url) as s:
        if s.scalar(select(Domain).where(Domain.name == name)):
            raise AccountError(f"domain {name} exists already")
        domain = Domain(name=name, owner=owner)
        s.add(domain)
        add_first_keys(s, domain, algorithms)  # no local domain without its DKIM key
    return name


def list_domains(home: Home) -> list[dict[str, object]]:
    with read_scope(home) as s:
        rows = s.execute(
            select(Domain.name, Domain.owner, func.count(Mailbox.id))
            .outerjoin(Mailbox).group_by(Domain.id).order_by(Domain.name)
        ).all()
    return [{"name": n, "owner": o, "mailboxes": c} for n, o, c in rows]


def remove_domain(home: Home, name: str) -> None:
    with session_scope(home.db_url) as s:
        domain = s.scalar(select(Domain).where(Domain.name == name.strip().lower()))
        if domain is None:
            raise AccountError(f"no domain {name}")
        s.delete(domain)


def is_local_domain(home: Home, name: str) -> bool:
    with read_scope(home) as s:
        return s.scalar(select(Domain.id).where(Domain.name == name.lower())) is not None


def local_domains(home: Home) -> set[str]:
    """The domains delivered here: every domain row, plus the node's hostname and default
    domain, which are local even without a row so that mail for them never leaves the node
    (and comes back: a loop)."""
    settings = load_settings(home)
    with read_scope(home) as s:
        names = set(s.scalars(select(Domain.name)))
    own = (settings["server.hostname"], settings["server.default_domain"])
    return names | {str(name).lower() for name in own if name}


def domain_owners(home: Home) -> dict[str, str]:
    """Every local domain and its system owner ("" for none)."""
    with read_scope(home) as s:
        return {name: owner for name, owner in s.execute(select(Domain.name, Domain.owner))}


def domains_owned_by(home: Home | Path, owner: str) -> list[str]:
    """Domains whose system owner is `owner` (the log tools' xuser)."""
    node = home if isinstance(home, _Home) else _Home.find(str(home))
    with read_scope(node) as s:
        return sorted(s.scalars(select(Domain.name).where(Domain.owner == owner)))


# ---- mailboxes ----------------------------------------------------------------------------------


def add_mailbox(home: Home, address: str, password: str, quota_mb: int = 0,
                make_maildir: bool = True) -> str:
    """Store a mailbox and (unless `make_maildir` is false: the unprivileged panel has the
    root helper make it as the mail owner) create its Maildir; returns the address."""
    local, domain_name = split_address(address)
    check_quota(quota_mb)
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise AccountError(str(exc)) from None
    with session_scope(home.db_url) as s:
        domain = s.scalar(select(Domain).where(Domain.name == domain_name))
        if domain is None:
            raise AccountError(f"{domain_name} is not a domain of this node; add it first "
                               f"with `mailyard domain add {domain_name}`")
        full = f"{local}@{domain_name}"
        if s.scalar(select(Mailbox.id).where(Mailbox.address == full)):
            raise AccountError(f"mailbox {full} exists already")
        if s.scalar(select(Alias.id).where(Alias.source == full)):
            raise AccountError(f"{full} is an alias; remove the alias first")
        s.add(Mailbox(domain=domain, local_part=local, address=full, password_hash=hashed,
                      quota_mb=quota_mb))
    if make_maildir:
        _make_maildir(home, full)
    return full


def _make_maildir(home: Home, address: str) -> None:
    """The mailbox on disk (the layout shared with delivery and Dovecot), with the settings
    read now, so that a long-running process (the panel) follows mail.root."""
    settings = load_settings(home)
    home.use_settings(settings)
    ensure_maildir(home, address, bool(settings["spam.bayes_imap_training"]))


def set_password(home: Home, address: str, password: str) -> None:
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise AccountError(str(exc)) from None
    with session_scope(home.db_url) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))
        if box is None:
            raise AccountError(f"no mailbox {address}")
        box.password_hash = hashed


# The largest mailbox quota, in MB (10 TB): far above any disk of a mail node, low enough that
# Dovecot's quota rule (bytes, 64-bit) never overflows.
MAX_QUOTA_MB = 10_000_000
QUOTA_ALLOWED = f"a whole number of megabytes from 0 (no limit) to {MAX_QUOTA_MB}"


def check_quota(quota_mb: int) -> int:
    """A mailbox quota as given, or AccountError with the value and what is allowed; the one
    check of the CLI, the API and the panel."""
    if not isinstance(quota_mb, int) or isinstance(quota_mb, bool) or \
            not 0 <= quota_mb <= MAX_QUOTA_MB:
        raise AccountError(f"quota {quota_mb!r} MB: {QUOTA_ALLOWED}")
    return quota_mb


def set_mailbox(home: Home, address: str, *, quota_mb: int | None = None,
                active: bool | None = None,
                messages_per_hour: int | None = None) -> MailboxInfo:
    """Change a mailbox's quota or active state (None: leave it); the mailbox as it now is.
    `messages_per_hour`: its own outbound limit (0: none), CLEAR_RATE_LIMIT: back to the
    node's limits.messages_per_hour, None: leave it."""
    if quota_mb is not None:
        check_quota(quota_mb)
    if messages_per_hour is not None:
        check_messages_per_hour(messages_per_hour)
    with session_scope(home.db_url) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))
        if box is None:
            raise AccountError(f"no mailbox {address}")
        if quota_mb is not None:
            box.quota_mb = quota_mb
        if active is not None:
            box.active = active
        if messages_per_hour is not None:
            box.messages_per_hour = (None if messages_per_hour == CLEAR_RATE_LIMIT
                                     else messages_per_hour)
        return MailboxInfo(box.address, box.active, box.quota_mb, box.spam_action)


def set_spam_action(home: Home, address: str, action: str) -> None:
    if action not in SPAM_ACTIONS:
        raise AccountError(f"spam action {action!r} is not one of {', '.join(SPAM_ACTIONS)}")
    with session_scope(home.db_url) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))
        if box is None:
            raise AccountError(f"no mailbox {address}")
        box.spam_action = action


def list_mailboxes(home: Home, domain: str | None = None) -> list[MailboxInfo]:
    with read_scope(home) as s:
        q = select(Mailbox).order_by(Mailbox.address)
        if domain:
            q = q.join(Domain).where(Domain.name == domain.lower())
        return [MailboxInfo(m.address, m.active, m.quota_mb, m.spam_action)
                for m in s.scalars(q)]


def ensure_all_maildirs(home: Home) -> int:
    """ensure_maildir for every mailbox in the store, with the current training setting.
    Called when spam.bayes_imap_training changes; returns how many mailboxes it visited."""
    settings = load_settings(home)
    home.use_settings(settings)
    training = bool(settings["spam.bayes_imap_training"])
    count = 0
    for box in list_mailboxes(home):
        ensure_maildir(home, box.address, training)
        count += 1
    return count


def get_mailbox(home: Home, address: str) -> MailboxInfo | None:
    key = mail_key(address)
    if key is None:
        return None
    with read_scope(home) as s:
        m = s.scalar(select(Mailbox).where(Mailbox.address == key))
        return MailboxInfo(m.address, m.active, m.quota_mb, m.spam_action) if m else None


def remove_mailbox(home: Home, address: str) -> None:
    """Removes the account; the mail on disk stays until an administrator deletes it."""
    with session_scope(home.db_url) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))
        if box is None:
            raise AccountError(f"no mailbox {address}")
        s.delete(box)


def check_mailbox_password(home: Home, address: str, password: str) -> bool:
    """SMTP AUTH's check: the same hash Dovecot verifies; False for unknown or inactive."""
    key = mail_key(address)
    if key is None:
        return False
    with read_scope(home) as s:
        stored = s.scalar(select(Mailbox.password_hash).where(
            Mailbox.address == key, Mailbox.active.is_(True)))
    return stored is not None and stored != "" and verify_password(stored, password)


# ---- aliases and forwards -----------------------------------------------------------------------


def add_alias(home: Home, source: str, targets: list[str], keep_copy: bool = False) -> str:
    local, domain_name = split_address(source)
    clean = _clean_targets(targets)
    full = f"{local}@{domain_name}"
    with session_scope(home.db_url) as s:
        domain = s.scalar(select(Domain).where(Domain.name == domain_name))
        if domain is None:
            raise AccountError(f"{domain_name} is not a domain of this node")
        if s.scalar(select(Alias.id).where(Alias.source == full)):
            raise AccountError(f"alias {full} exists already")
        s.add(Alias(domain_id=domain.id, source=full, targets="\n".join(clean),
                    keep_copy=keep_copy))
    return full


def _clean_targets(targets: list[str]) -> list[str]:
    clean: list[str] = []
    for target in targets:
        t_local, t_domain = split_address(target)
        clean.append(f"{t_local}@{t_domain}")
    if not clean:
        raise AccountError("an alias needs at least one target address")
    return clean


def update_alias(home: Home, source: str, targets: list[str], keep_copy: bool = False) -> None:
    """Replace an alias's targets in one transaction; a refused change leaves it as it was."""
    clean = _clean_targets(targets)
    with session_scope(home.db_url) as s:
        alias = s.scalar(select(Alias).where(Alias.source == source.strip().lower()))
        if alias is None:
            raise AccountError(f"no alias {source}")
        alias.targets = "\n".join(clean)
        alias.keep_copy = keep_copy


def check_owner(owner: str) -> str:
    """A domain owner as given, or AccountError saying what is allowed ("" is no owner)."""
    if not isinstance(owner, str) or (owner and not _OWNER.match(owner)):
        raise AccountError(f"owner {owner!r} is not a unix user name; allowed: {OWNER_ALLOWED}")
    return owner


def set_domain_owner(home: Home, name: str, owner: str) -> None:
    set_domain(home, name, owner=owner)


def set_domain(home: Home, name: str, *, owner: str | None = None) -> dict[str, object]:
    """Change a domain's owner (None: leave it); the domain as list_domains shows it.
    (Domains have no active state: a domain stops receiving when it is removed.)"""
    if owner is not None:
        check_owner(owner)
    key = name.strip().lower().rstrip(".")
    with session_scope(home.db_url) as s:
        domain = s.scalar(select(Domain).where(Domain.name == key))
        if domain is None:
            raise AccountError(f"no domain {name}")
        if owner is not None:
            domain.owner = owner
    return next(d for d in list_domains(home) if d["name"] == key)


def set_mailbox_active(home: Home, address: str, active: bool) -> None:
    """An inactive mailbox keeps its mail but can neither log in nor receive."""
    with session_scope(home.db_url) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == address.strip().lower()))
        if box is None:
            raise AccountError(f"no mailbox {address}")
        box.active = active


def list_aliases(home: Home) -> list[AliasInfo]:
    with read_scope(home) as s:
        return [AliasInfo(a.source, a.target_list, a.keep_copy)
                for a in s.scalars(select(Alias).order_by(Alias.source))]


def get_alias(home: Home, source: str) -> AliasInfo | None:
    key = mail_key(source)
    if key is None:
        return None
    with read_scope(home) as s:
        a = s.scalar(select(Alias).where(Alias.source == key))
        return AliasInfo(a.source, a.target_list, a.keep_copy) if a else None


def remove_alias(home: Home, source: str) -> None:
    with session_scope(home.db_url) as s:
        alias = s.scalar(select(Alias).where(Alias.source == source.strip().lower()))
        if alias is None:
            raise AccountError(f"no alias {source}")
        s.delete(alias)


def sender_facts(home: Home, login: str, sender: str) -> tuple[bool, bool]:
    """What sender authorization needs to know about a logged-in mailbox `login` using
    `sender` as MAIL FROM: (an alias `sender` delivers to `login`, the two addresses' domains
    have the same non-empty owner)."""
    login_key, sender_key = mail_key(login), mail_key(sender)
    if login_key is None or sender_key is None:
        return False, False
    login_domain = login_key.rpartition("@")[2]
    sender_domain = sender_key.rpartition("@")[2]
    with read_scope(home) as s:
        alias = s.scalar(select(Alias).where(Alias.source == sender_key))
        owners = dict(s.execute(select(Domain.name, Domain.owner).where(
            Domain.name.in_({login_domain, sender_domain}))).all())
    alias_of_login = alias is not None and login_key in alias.target_list
    owner = owners.get(login_domain) or ""
    return alias_of_login, bool(owner) and owners.get(sender_domain) == owner


# ---- admins ---------------------------------------------------------------------------------------


def add_admin(home: Home, username: str, password: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", username):
        raise AccountError(f"admin name {username!r}: letters, digits and . _ @ - only")
    with session_scope(home.db_url) as s:
        if s.scalar(select(Admin.id).where(Admin.username == username)):
            raise AccountError(f"admin {username} exists already")
        s.add(Admin(username=username, password_hash=hash_password(password)))


def check_admin_password(home: Home, username: str, password: str) -> bool:
    with read_scope(home) as s:
        stored = s.scalar(select(Admin.password_hash).where(Admin.username == username))
    return stored is not None and stored != "" and verify_password(stored, password)


def count_admins(home: Home) -> int:
    with session_scope(home.db_url) as s:
        return int(s.scalar(select(func.count(Admin.id))) or 0)


# ---- a mailbox's own outbound limit (issue 19, item 3) ------------------------------------------
# `messages_per_hour` that puts a mailbox back on the node's limits.messages_per_hour.
CLEAR_RATE_LIMIT = -1
# As the setting limits.messages_per_hour allows.
MAX_MESSAGES_PER_HOUR = 1_000_000


def check_messages_per_hour(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or \
            not (value == CLEAR_RATE_LIMIT or 0 <= value <= MAX_MESSAGES_PER_HOUR):
        raise AccountError(f"messages per hour {value!r}: a whole number from 0 (no limit) to "
                           f"{MAX_MESSAGES_PER_HOUR}, or {CLEAR_RATE_LIMIT} for the node's "
                           "limits.messages_per_hour")
    return value


def mailbox_rate_limit(home: Home, address: str) -> int | None:
    """A mailbox's own messages-per-hour limit (None: the node's); AccountError if none."""
    key = mail_key(address)
    with read_scope(home) as s:
        box = s.scalar(select(Mailbox).where(Mailbox.address == key)) if key else None
        if box is None:
            raise AccountError(f"no mailbox {address}")
        return box.messages_per_hour


def mailbox_rate_limits(home: Home) -> dict[str, int | None]:
    """Every mailbox's own messages-per-hour limit (None: the node's), in one query."""
    with read_scope(home) as s:
        return {a: r for a, r in s.execute(select(Mailbox.address, Mailbox.messages_per_hour))}
