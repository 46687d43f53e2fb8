"""health report history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "health_reports",
        sa.Column("id", _BigIntId, primary_key=True, autoincrement=True),
        sa.Column("generated_at", sa.Float(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_health_reports_generated_at", "health_reports", ["generated_at"])


def downgrade() -> None:
    op.drop_index("ix_health_reports_generated_at", table_name="health_reports")
    op.drop_table("health_reports")
