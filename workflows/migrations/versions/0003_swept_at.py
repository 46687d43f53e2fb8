"""when a pending line was last re-enqueued by the sweeper

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_lines") as batch:
        batch.add_column(sa.Column("swept_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("log_lines") as batch:
        batch.drop_column("swept_at")
