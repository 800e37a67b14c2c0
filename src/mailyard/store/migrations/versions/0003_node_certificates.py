"""Each node's TLS certificate in `nodes`, so the manager can pin it when it calls the node.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:  # batch: SQLite cannot ALTER every way
        batch.add_column(sa.Column("cert_pem", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("cert_pem")
