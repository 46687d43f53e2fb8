"""SQL storage of log lines and runs: the source of truth.

SQLite (a file) by default, PostgreSQL through ``DATABASE_URL``. The schema is managed by
Alembic migrations shipped in :mod:`workflows.migrations`, applied by
``relaycast db upgrade`` and automatically the first time a process opens the store.

Inserts are idempotent (``ON CONFLICT (run_id, seq) DO NOTHING``): a flush retried after
an unclear failure cannot duplicate a line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from workflows.models import FAILED, PENDING, SENT, HealthRecord, LogLine, Run

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets its folder created, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         connect_args={"connect_timeout": 5} if parsed.get_backend_name() ==
                         "postgresql" else {})


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (PostgreSQL: under an advisory lock)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(774411)"))
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class LogStore:
    """Lines and runs in SQL. Thread-safe; one per process (see :func:`store_for`)."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        if migrate and current_revision(engine) != head_revision():
            upgrade(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> LogStore:
        return cls(make_engine(url), migrate=migrate)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _insert(self) -> Any:
        name = self.engine.dialect.name
        if name == "postgresql":
            return postgresql.insert(LogLine)
        if name == "sqlite":
            return sqlite.insert(LogLine)
        raise RuntimeError(f"unsupported database: {name}")

    # Lines -------------------------------------------------------------------------------------

    def insert_lines(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Bulk-insert lines (run_id, seq, ts, level, message, data); repeats are ignored."""
        if not rows:
            return
        statement = self._insert().on_conflict_do_nothing(index_elements=["run_id", "seq"])
        with self.engine.begin() as connection:
            connection.execute(statement, [{**row, "broadcast_state": PENDING} for row in rows])

    def max_seqs(self, run_ids: Iterable[str]) -> dict[str, int]:
        """The highest stored seq of each run (runs with no line are left out)."""
        ids = list(run_ids)
        if not ids:
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(LogLine.run_id, func.max(LogLine.seq)).where(LogLine.run_id.in_(ids))
                .group_by(LogLine.run_id))
            return {run_id: int(seq) for run_id, seq in rows}

    def lines(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[LogLine]:
        with Session(self.engine) as session:
            query = (select(LogLine).where(LogLine.run_id == run_id, LogLine.seq > after_seq)
                     .order_by(LogLine.seq))
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))

    def mark(self, ranges: Sequence[tuple[str, int, int]], state: str,
             broadcaster: str | None = None) -> None:
        """Set the broadcast state of each ``(run_id, first_seq, last_seq)`` range."""
        if not ranges:
            return
        with self.engine.begin() as connection:
            for run_id, first, last in ranges:
                connection.execute(
                    update(LogLine)
                    .where(LogLine.run_id == run_id, LogLine.seq >= first, LogLine.seq <= last)
                    .values(broadcast_state=state, broadcaster=broadcaster))

    def broadcast_counts(self, run_ids: Iterable[str] | None = None) -> dict[tuple[str, str | None], int]:
        """Lines per (broadcast_state, broadcaster)."""
        query = select(LogLine.broadcast_state, LogLine.broadcaster, func.count()).group_by(
            LogLine.broadcast_state, LogLine.broadcaster)
        if run_ids is not None:
            query = query.where(LogLine.run_id.in_(list(run_ids)))
        with self.engine.connect() as connection:
            return {(state, name): int(n) for state, name, n in connection.execute(query)}

    def sweepable(self, older_than_ms: int, resweep_before_ms: int, limit: int) -> list[LogLine]:
        """Pending lines stored before ``older_than_ms`` and not re-enqueued since
        ``resweep_before_ms``, oldest runs first, in seq order."""
        with Session(self.engine) as session:
            query = (select(LogLine)
                     .where(LogLine.broadcast_state == PENDING, LogLine.ts < older_than_ms,
                            (LogLine.swept_at.is_(None)) | (LogLine.swept_at < resweep_before_ms))
                     .order_by(LogLine.run_id, LogLine.seq).limit(limit))
            return list(session.scalars(query))

    def mark_swept(self, ranges: Sequence[tuple[str, int, int]], at_ms: int) -> None:
        with self.engine.begin() as connection:
            for run_id, first, last in ranges:
                connection.execute(
                    update(LogLine)
                    .where(LogLine.run_id == run_id, LogLine.seq >= first, LogLine.seq <= last,
                           LogLine.broadcast_state == PENDING)
                    .values(swept_at=at_ms))

    def oldest_pending_ts(self) -> int | None:
        with self.engine.connect() as connection:
            value = connection.execute(select(func.min(LogLine.ts)).where(
                LogLine.broadcast_state == PENDING)).scalar()
            return int(value) if value is not None else None

    # Runs --------------------------------------------------------------------------------------

    def start_run(self, run_id: str, workflow: str, params: Mapping[str, Any],
                  at_ms: int | None = None) -> None:
        """Record a run as running (``at_ms``: when it started, epoch ms; default now)."""
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        with self._sessions.begin() as session:
            run = session.get(Run, run_id)
            if run is None:
                session.add(Run(run_id=run_id, workflow=workflow, status="running",
                                params=dict(params), started_at=at_ms))
            else:
                run.status, run.started_at, run.finished_at, run.error = "running", at_ms, None, None

    def finish_run(self, run_id: str, status: str, error: str | None = None,
                   at_ms: int | None = None) -> None:
        with self._sessions.begin() as session:
            run = session.get(Run, run_id)
            if run is not None:
                run.status, run.error = status, error
                run.finished_at = int(time.time() * 1000) if at_ms is None else at_ms

    # Health history ----------------------------------------------------------------------------

    def add_health(self, generated_at: float, healthy: bool, report: Mapping[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.add(HealthRecord(generated_at=generated_at, healthy=healthy,
                                     report=dict(report)))

    def health_history(self, limit: int = 100) -> list[HealthRecord]:
        with Session(self.engine) as session:
            return list(session.scalars(select(HealthRecord)
                                        .order_by(HealthRecord.generated_at.desc()).limit(limit)))

    def run(self, run_id: str) -> Run | None:
        with Session(self.engine) as session:
            return session.get(Run, run_id)

    # Viewer queries (the runs list) -----------------------------------------------------------

    def recent_runs(self, limit: int = 50, status: str | None = None) -> list[Run]:
        """The ``limit`` most recently started runs, newest first (only ``status`` ones if given)."""
        query = select(Run).order_by(Run.started_at.desc(), Run.run_id).limit(limit)
        if status is not None:
            query = query.where(Run.status == status)
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def line_counts(self, run_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``(stored lines, highest seq)`` of each run (runs with no line are left out)."""
        ids = list(run_ids)
        if not ids:
            return {}
        query = (select(LogLine.run_id, func.count(), func.max(LogLine.seq))
                 .where(LogLine.run_id.in_(ids)).group_by(LogLine.run_id))
        with self.engine.connect() as connection:
            return {run_id: (int(n), int(top)) for run_id, n, top in connection.execute(query)}


_stores: dict[tuple[int, str], LogStore] = {}
_stores_lock = threading.Lock()


def store_for(url: str) -> LogStore:
    """This process's store for ``url`` (a new engine after a fork)."""
    key = (os.getpid(), url)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = LogStore.from_url(url)
        return store


__all__ = ["FAILED", "PENDING", "SENT", "LogStore", "make_engine", "store_for", "upgrade"]
