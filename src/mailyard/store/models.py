"""The store's tables: domains, mailboxes, aliases, settings, admins, API tokens, spam preferences."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Where a mailbox's spam goes (guide 6.1; issue 6): the one list of choices, the first the default.
SPAM_ACTIONS: tuple[str, ...] = ("spam_folder", "inbox", "discard")


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Domain(Base):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True, nullable=False)
    # The system (unix) user who owns the domain on a hosting server; the log tools' xuser.
    owner: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    mailboxes: Mapped[list[Mailbox]] = relationship(back_populates="domain",
                                                    cascade="all, delete-orphan")
    dkim_keys: Mapped[list[DkimKey]] = relationship(back_populates="domain",
                                                    cascade="all, delete-orphan")


class Mailbox(Base):
    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("domain_id", "local_part"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    local_part: Mapped[str] = mapped_column(String(64), nullable=False)
    # Lowercased user@domain: Dovecot lowercases user names before it looks them up.
    address: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    # `{SCHEME}hash`, a form Dovecot verifies itself (ARGON2ID or SHA512-CRYPT).
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    quota_mb: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Where mail marked as spam goes: spam_folder, inbox or discard (issue 6).
    spam_action: Mapped[str] = mapped_column(String(16), default=SPAM_ACTIONS[0], nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # Its own outbound limit, messages per hour (0: none); NULL: limits.messages_per_hour.
    messages_per_hour: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)

    domain: Mapped[Domain] = relationship(back_populates="mailboxes")


class Alias(Base):
    """An alias (source has no mailbox) or a forward (source is a mailbox): mail to `source`
    goes to every address in `targets`; `keep_copy` also delivers it to the source mailbox."""

    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    targets: Mapped[str] = mapped_column(Text, nullable=False)  # one address per line
    keep_copy: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    @property
    def target_list(self) -> list[str]:
        return [t for t in self.targets.split("\n") if t]


class SettingRow(Base):
    """A setting's value as text; node '' is the cluster-wide value, a node name overrides it."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    node: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    value: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now,
                                                 onupdate=_now)


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SpamPreference(Base):
    """A SpamAssassin user preference (guide 6.1.4) with its scope: global, a domain or a mailbox."""

    __tablename__ = "spam_preferences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(330), nullable=False, default="global")
    preference: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ClusterNode(Base):
    """A node of the cluster that shares this store: where to reach it and what it last said."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The node's panel/API URL (https://host:port); how the manager and administrators reach it.
    address: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    port_base: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="member")
    version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # {"smtp": "RUNNING", ...} as the node last reported it.
    services: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    # sha256 of the join token the node was admitted with (never the token itself).
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # The newest cascaded change when the node joined: older ones are already in what it loads.
    joined_change_id: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The node's own TLS certificate (PEM, HOME/tls/cert.pem), written at init, join and every
    # heartbeat: the manager trusts exactly this certificate when it calls the node's API.
    cert_pem: Mapped[str] = mapped_column(Text, nullable=False, default="")


class ClusterToken(Base):
    """A join token made by `mailyard cluster token`: only its sha256 is kept."""

    __tablename__ = "cluster_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SettingChange(Base):
    """A cascaded setting change, which every node re-applies (reloading what it affects)."""

    __tablename__ = "setting_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    origin: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SettingChangeMark(Base):
    """One node's outcome of one cascaded change: applied (ok) or failed, and why."""

    __tablename__ = "setting_change_marks"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("setting_changes.id", ondelete="CASCADE"),
                                           primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")


class DkimKey(Base):
    """A domain's DKIM signing key (RFC 6376) under one selector.

    Kept in the store so that every node of a cluster signs with the same keys. A key is
    *active* while it signs; after a rotation the old key is *retired* (it no longer signs)
    but stays listed, so its public half can stay in DNS until mail signed with it has been
    verified everywhere."""

    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("domain_id", "selector"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    selector: Mapped[str] = mapped_column(String(63), nullable=False)
    # "rsa" (rsa-sha256) or "ed25519" (ed25519-sha256, RFC 8463).
    algorithm: Mapped[str] = mapped_column(String(16), nullable=False, default="rsa")
    private_pem: Mapped[str] = mapped_column(Text, nullable=False)
    # The p= value of the DNS record: base64 of the public key.
    public_b64: Mapped[str] = mapped_column(Text, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    domain: Mapped[Domain] = relationship(back_populates="dkim_keys")


class NodeSecret(Base):
    """A random secret the node keeps in the store, shared by every node of a cluster (the
    SRS key: a bounce may come back to any node)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)  # hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
