"""per-run line counters: seqs allocated atomically where the lines are stored

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_counters",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
    )
    # Runs stored before the counters existed continue after their last line.
    op.execute("INSERT INTO run_counters (run_id, last_seq) "
               "SELECT run_id, MAX(seq) FROM log_lines GROUP BY run_id")


def downgrade() -> None:
    op.drop_table("run_counters")
