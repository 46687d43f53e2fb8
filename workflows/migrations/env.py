"""Alembic environment: the URL and connection come from relaycast, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from workflows.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `relaycast db upgrade` (workflows.store.upgrade)")
_run(connection)
