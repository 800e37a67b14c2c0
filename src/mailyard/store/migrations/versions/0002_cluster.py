"""Cluster membership and cascaded setting changes: nodes, join tokens, changes, marks.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(255), nullable=False, server_default=""),
        sa.Column("port_base", sa.Integer, nullable=False, server_default="0"),
        sa.Column("role", sa.String(16), nullable=False, server_default="member"),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("services", sa.Text, nullable=False, server_default="{}"),
        sa.Column("token_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("joined_change_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("joined_at", sa.DateTime(timezone=True)),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "cluster_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "setting_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("origin", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "setting_change_marks",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("change_id", sa.Integer,
                  sa.ForeignKey("setting_changes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.Column("ok", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("setting_change_marks")
    op.drop_table("setting_changes")
    op.drop_table("cluster_tokens")
    op.drop_table("nodes")
