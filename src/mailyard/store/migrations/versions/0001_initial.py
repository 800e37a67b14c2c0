"""The first schema: domains, mailboxes, aliases, settings, admins, API tokens, spam preferences.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE")),
        sa.Column("local_part", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("quota_mb", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spam_action", sa.String(16), nullable=False, server_default="spam_folder"),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("domain_id", "local_part"),
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE")),
        sa.Column("source", sa.String(320), nullable=False, unique=True),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("keep_copy", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("node", sa.String(64), primary_key=True, server_default=""),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "spam_preferences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(330), nullable=False, server_default="global"),
        sa.Column("preference", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    for table in ("spam_preferences", "api_tokens", "admins", "settings", "aliases",
                  "mailboxes", "domains"):
        op.drop_table(table)
