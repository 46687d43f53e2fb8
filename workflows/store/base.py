"""What every part of :class:`~workflows.store.LogStore` shares: its engine, its sessions and
its dialect's ``INSERT … ON CONFLICT``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker


class StoreBase:
    """The state :class:`~workflows.store.LogStore` sets up, as each of its parts sees it."""

    engine: Engine
    _sessions: sessionmaker[Session]

    def _dialect(self) -> Any:
        name = self.engine.dialect.name
        if name == "postgresql":
            return postgresql
        if name == "sqlite":
            return sqlite
        raise RuntimeError(f"unsupported database: {name}")
