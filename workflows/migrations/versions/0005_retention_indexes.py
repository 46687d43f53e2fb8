"""indexes the retention task needs: lines by time, runs by end

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

``relaycast.prune`` finds the lines older than the retention bound (``ts``) and the ended
runs older than it (``finished_at``) without reading whole tables.

On a large PostgreSQL table ``CREATE INDEX`` blocks inserts while it builds. To avoid that,
build the index beforehand without blocking writers, and this migration keeps it:

    CREATE INDEX CONCURRENTLY ix_log_lines_ts ON log_lines (ts);
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_INDEXES = (("ix_log_lines_ts", "log_lines", ["ts"]),
            ("ix_runs_finished_at", "runs", ["finished_at"]))


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for name, table, columns in _INDEXES:
        if name not in {index["name"] for index in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
