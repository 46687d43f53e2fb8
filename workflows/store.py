"""SQL storage of log lines and runs: the source of truth.

SQLite (a file) by default, PostgreSQL through ``DATABASE_URL``. The schema is managed by
Alembic migrations shipped in :mod:`workflows.migrations`, applied by
``relaycast db upgrade`` and automatically the first time a process opens the store.

Sequence numbers are allocated where the lines are stored, in the same transaction (see
:meth:`LogStore.append`): a run written by many processes on many hosts at once gets
contiguous seqs from 1, every line exactly once, and a line that fails to store is never
silent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Engine, case, create_engine, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from broadcasters.wire import LineEvent
from workflows.models import HealthRecord, LineState, LogLine, Run, RunCounter, RunStatus

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


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while its schema changes.

    SQLite runs DDL outside a transaction, so two processes opening a fresh file at once
    (prefork workers on first use) would both create the tables and one would fail. The
    lock file sits next to the database; the second process waits, then finds the head
    revision and changes nothing. Other databases (and in-memory SQLite) need no lock here.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``, one process at a time (PostgreSQL: under an
    advisory lock; a SQLite file: under a lock file beside it)."""
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(774411)"))
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class SeqConflict(Exception):
    """Lines whose (run_id, seq) was already taken: the run's counter was behind its lines
    (rows written without it, by a tool or an older relaycast)."""

    def __init__(self, run_ids: set[str], lost: int) -> None:
        super().__init__(f"{lost} line(s) of {len(run_ids)} run(s) collided with stored lines")
        self.run_ids = run_ids
        self.lost = lost


#: Times :meth:`LogStore.append` renumbers after a conflict before it gives up.
MAX_RENUMBERINGS = 3
#: Ids in one ``IN (...)`` list (SQLite allows 32,766 parameters).
_IDS_PER_STATEMENT = 1000


class LogStore:
    """Lines and runs in SQL. Thread-safe; one per process (see :func:`store_for`)."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        if migrate and current_revision(engine) != head_revision():
            upgrade(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        #: Lines renumbered after a conflict with lines already stored (never silent).
        self.renumbered = 0

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> LogStore:
        return cls(make_engine(url), migrate=migrate)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _dialect(self) -> Any:
        name = self.engine.dialect.name
        if name == "postgresql":
            return postgresql
        if name == "sqlite":
            return sqlite
        raise RuntimeError(f"unsupported database: {name}")

    # Lines -------------------------------------------------------------------------------------

    def append(self, runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
               ) -> list[tuple[str, list[LineEvent]]]:
        """Number and store lines; return them per run with their seqs, in the order given.

        ``runs``: ``(run_id, lines)`` with each line's ``ts``, ``level``, ``message``,
        ``data``. One transaction: each run's counter is advanced by its number of lines
        (one statement for every run, ``INSERT … ON CONFLICT DO UPDATE … RETURNING``), which
        allocates a contiguous range no other process or host can get, and the lines are
        inserted with those seqs. Writers lock counters in run-id order, so they never
        deadlock; on PostgreSQL a second writer of the same run waits for the first to
        commit, so a run's seqs also become visible in order.

        If the insert stores fewer lines than it was given (a counter behind lines written
        without it), nothing is kept: the counters are moved past the stored lines and the
        whole flush is numbered again, so each writer's lines keep their order. The lines
        renumbered are counted (:attr:`renumbered`) and logged.
        """
        runs = [(run_id, lines) for run_id, lines in runs if lines]
        if not runs:
            return []
        for attempt in range(MAX_RENUMBERINGS + 1):
            try:
                return self._append_once(runs)
            except SeqConflict as conflict:
                if attempt == MAX_RENUMBERINGS:
                    raise
                self.renumbered += sum(len(lines) for run_id, lines in runs
                                       if run_id in conflict.run_ids)
                logger.warning("relaycast store: %s; counters moved past the stored lines, "
                               "numbering again (%d line(s) renumbered so far)", conflict,
                               self.renumbered)
                self._resync_counters(conflict.run_ids)
        raise AssertionError("unreachable")

    def _append_once(self, runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
                     ) -> list[tuple[str, list[LineEvent]]]:
        dialect = self._dialect()
        sizes = {run_id: len(lines) for run_id, lines in runs}
        counter = dialect.insert(RunCounter).values(
            [{"run_id": run_id, "last_seq": sizes[run_id]} for run_id in sorted(sizes)])
        counter = counter.on_conflict_do_update(
            index_elements=[RunCounter.run_id],
            set_={"last_seq": RunCounter.last_seq + counter.excluded.last_seq},
        ).returning(RunCounter.run_id, RunCounter.last_seq)
        out: list[tuple[str, list[LineEvent]]] = []
        rows: list[dict[str, Any]] = []
        with self.engine.begin() as connection:
            last = {run_id: int(seq) for run_id, seq in connection.execute(counter)}
            for run_id, lines in runs:
                first = last[run_id] - len(lines) + 1
                events: list[LineEvent] = [
                    {"seq": first + i, "ts": line["ts"], "level": line["level"],
                     "message": line["message"], "data": line["data"]}
                    for i, line in enumerate(lines)]
                out.append((run_id, events))
                rows.extend({"run_id": run_id, **event, "broadcast_state": LineState.PENDING}
                            for event in events)
            insert = (dialect.insert(LogLine)
                      .on_conflict_do_nothing(index_elements=["run_id", "seq"])
                      .returning(LogLine.run_id))
            stored: dict[str, int] = {}
            for (run_id,) in connection.execute(insert, rows):
                stored[run_id] = stored.get(run_id, 0) + 1
            short = {run_id for run_id, n in sizes.items() if stored.get(run_id, 0) < n}
            if short:
                connection.rollback()
                raise SeqConflict(short, sum(sizes[r] - stored.get(r, 0) for r in short))
        return out

    def _resync_counters(self, run_ids: Iterable[str]) -> None:
        """Move each run's counter past its highest stored seq."""
        with self.engine.begin() as connection:
            highest = dict(connection.execute(
                select(LogLine.run_id, func.max(LogLine.seq))
                .where(LogLine.run_id.in_(list(run_ids))).group_by(LogLine.run_id)).all())
            self._advance_counters(connection, {r: int(s) for r, s in highest.items()})

    def _advance_counters(self, connection: Any, highest: Mapping[str, int]) -> None:
        """Counters at least ``highest[run_id]`` (never moved back)."""
        if not highest:
            return
        dialect = self._dialect()
        statement = dialect.insert(RunCounter).values(
            [{"run_id": run_id, "last_seq": seq} for run_id, seq in sorted(highest.items())])
        greatest = func.max if self.engine.dialect.name == "sqlite" else func.greatest
        connection.execute(statement.on_conflict_do_update(
            index_elements=[RunCounter.run_id],
            set_={"last_seq": greatest(RunCounter.last_seq, statement.excluded.last_seq)}))

    def insert_lines(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store lines that already have their seqs (imports, tests); repeats are ignored and
        the runs' counters move past them, so that later lines continue after them."""
        if not rows:
            return
        statement = self._dialect().insert(LogLine).on_conflict_do_nothing(
            index_elements=["run_id", "seq"])
        highest: dict[str, int] = {}
        for row in rows:
            highest[row["run_id"]] = max(highest.get(row["run_id"], 0), int(row["seq"]))
        with self.engine.begin() as connection:
            connection.execute(statement, [{**row, "broadcast_state": LineState.PENDING}
                                           for row in rows])
            self._advance_counters(connection, highest)

    def last_seqs(self, run_ids: Iterable[str]) -> dict[str, int]:
        """Each run's last allocated seq, i.e. its number of lines (runs with none left out)."""
        ids = list(run_ids)
        if not ids:
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(select(RunCounter.run_id, RunCounter.last_seq)
                                      .where(RunCounter.run_id.in_(ids)))
            return {run_id: int(seq) for run_id, seq in rows}

    def lines(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[LogLine]:
        with Session(self.engine) as session:
            query = (select(LogLine).where(LogLine.run_id == run_id, LogLine.seq > after_seq)
                     .order_by(LogLine.seq))
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))

    def mark(self, ranges: Sequence[tuple[str, int, int]], state: LineState,
             broadcaster: str | None = None) -> None:
        """Set the broadcast state of each ``(run_id, first_seq, last_seq)`` range.

        An outcome also ends a re-enqueue in flight (``swept_at`` is cleared): a line the
        sweeper or ``relaycast replay`` sent again and that failed again can be replayed at
        once, instead of after the re-enqueue's ten minutes.
        """
        if not ranges:
            return
        with self.engine.begin() as connection:
            for run_id, first, last in ranges:
                connection.execute(
                    update(LogLine)
                    .where(LogLine.run_id == run_id, LogLine.seq >= first, LogLine.seq <= last)
                    .values(broadcast_state=state, broadcaster=broadcaster, swept_at=None))

    def broadcast_counts(self, run_ids: Iterable[str] | None = None
                         ) -> dict[tuple[str, str | None], int]:
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
                     .where(LogLine.broadcast_state == LineState.PENDING,
                            LogLine.ts < older_than_ms, self._unclaimed(resweep_before_ms))
                     .order_by(LogLine.run_id, LogLine.seq).limit(limit))
            return list(session.scalars(query))

    def mark_swept(self, ranges: Sequence[tuple[str, int, int]], at_ms: int) -> None:
        with self.engine.begin() as connection:
            for run_id, first, last in ranges:
                connection.execute(
                    update(LogLine)
                    .where(LogLine.run_id == run_id, LogLine.seq >= first, LogLine.seq <= last,
                           LogLine.broadcast_state == LineState.PENDING)
                    .values(swept_at=at_ms))

    # Replay (relaycast replay) ---------------------------------------------------------------

    @staticmethod
    def _replayable(*, stale_before_ms: int, include_logged: bool, run_id: str | None = None,
                    since_ms: int | None = None) -> ColumnElement[bool]:
        """Lines owed to a live broadcaster: ``failed``; ``pending`` since before
        ``stale_before_ms`` (the sweeper's bound); ``logged`` when ``include_logged`` (a live
        broadcaster is configured); of ``run_id`` and stored from ``since_ms`` if given."""
        owed: ColumnElement[bool] = (LogLine.broadcast_state == LineState.FAILED) | (
            (LogLine.broadcast_state == LineState.PENDING) & (LogLine.ts < stale_before_ms))
        if include_logged:
            owed = owed | (LogLine.broadcast_state == LineState.LOGGED)
        condition: ColumnElement[bool] = owed.self_group()
        if run_id is not None:
            condition = condition & (LogLine.run_id == run_id)
        if since_ms is not None:
            condition = condition & (LogLine.ts >= since_ms)
        return condition

    @staticmethod
    def _unclaimed(claimed_before_ms: int) -> ColumnElement[bool]:
        """Not re-enqueued (by the sweeper or a replay) since ``claimed_before_ms``."""
        return (LogLine.swept_at.is_(None) | (LogLine.swept_at < claimed_before_ms)).self_group()

    def replay_candidates(self, *, claimed_before_ms: int, limit: int, stale_before_ms: int,
                          include_logged: bool, run_id: str | None = None,
                          since_ms: int | None = None) -> list[LogLine]:
        """Replayable lines not in flight, by run and seq, at most ``limit``."""
        query = (select(LogLine)
                 .where(self._replayable(stale_before_ms=stale_before_ms,
                                         include_logged=include_logged, run_id=run_id,
                                         since_ms=since_ms),
                        self._unclaimed(claimed_before_ms))
                 .order_by(LogLine.run_id, LogLine.seq).limit(limit))
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def replay_counts(self, *, claimed_before_ms: int, stale_before_ms: int,
                      include_logged: bool, run_id: str | None = None,
                      since_ms: int | None = None) -> dict[tuple[str, str, bool], int]:
        """Replayable lines per ``(run_id, state, in flight)``."""
        in_flight = ~self._unclaimed(claimed_before_ms)
        flag = case((in_flight, 1), else_=0)
        query = (select(LogLine.run_id, LogLine.broadcast_state, flag, func.count())
                 .where(self._replayable(stale_before_ms=stale_before_ms,
                                         include_logged=include_logged, run_id=run_id,
                                         since_ms=since_ms))
                 .group_by(LogLine.run_id, LogLine.broadcast_state, flag))
        with self.engine.connect() as connection:
            return {(run, state, bool(busy)): int(n)
                    for run, state, busy, n in connection.execute(query)}

    def claim_for_replay(self, ids: Sequence[int], *, at_ms: int, claimed_before_ms: int
                         ) -> set[int]:
        """Mark lines re-enqueued at ``at_ms`` (``swept_at``), only those still replayable and
        not claimed since ``claimed_before_ms``; return the ids this call claimed. One
        conditional UPDATE per chunk: of two replays at once, each line goes to one."""
        claimed: set[int] = set()
        states = (LineState.FAILED, LineState.LOGGED, LineState.PENDING)
        with self.engine.begin() as connection:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                chunk = list(ids[start:start + _IDS_PER_STATEMENT])
                claimed.update(connection.execute(
                    update(LogLine)
                    .where(LogLine.id.in_(chunk), LogLine.broadcast_state.in_(states),
                           self._unclaimed(claimed_before_ms))
                    .values(swept_at=at_ms).returning(LogLine.id)).scalars())
        return claimed

    def release_claims(self, ids: Sequence[int], *, at_ms: int) -> None:
        """Undo :meth:`claim_for_replay` of lines that could not be enqueued after all."""
        with self.engine.begin() as connection:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                connection.execute(
                    update(LogLine)
                    .where(LogLine.id.in_(list(ids[start:start + _IDS_PER_STATEMENT])),
                           LogLine.swept_at == at_ms)
                    .values(swept_at=None))

    def oldest_pending_ts(self) -> int | None:
        with self.engine.connect() as connection:
            value = connection.execute(select(func.min(LogLine.ts)).where(
                LogLine.broadcast_state == LineState.PENDING)).scalar()
            return int(value) if value is not None else None

    # Runs --------------------------------------------------------------------------------------

    def start_run(self, run_id: str, workflow: str, params: Mapping[str, Any],
                  at_ms: int | None = None) -> None:
        """Record a run as running (``at_ms``: when it started, epoch ms; default now).

        A run that ended after ``at_ms`` keeps its end: the start of a run can reach SQL
        after its end (it travels with the emitter's next flush; the end is recorded at once).
        """
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        statement = self._dialect().insert(Run).values(
            run_id=run_id, workflow=workflow, status=RunStatus.RUNNING, params=dict(params),
            started_at=at_ms, finished_at=None, error=None)
        statement = statement.on_conflict_do_update(
            index_elements=[Run.run_id],
            set_={"status": RunStatus.RUNNING, "started_at": at_ms, "finished_at": None,
                  "error": None, "workflow": statement.excluded.workflow,
                  "params": statement.excluded.params},
            where=Run.finished_at.is_(None) | (Run.finished_at < at_ms))
        with self.engine.begin() as connection:
            connection.execute(statement)

    def finish_run(self, run_id: str, status: RunStatus, error: str | None = None,
                   at_ms: int | None = None, *, workflow: str = "") -> Run | None:
        """End a running run; return it when this call ended it, None when it had already
        ended (so that of several processes ending one run, exactly one announces it).

        One conditional UPDATE decides, atomically on every database. A run never started
        in SQL (its start was lost or is still in flight) is recorded as ended.
        """
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        end = (update(Run).where(Run.run_id == run_id, Run.status == RunStatus.RUNNING)
               .values(status=status, error=error, finished_at=at_ms).returning(Run.run_id))
        create = self._dialect().insert(Run).values(
            run_id=run_id, workflow=workflow, status=status, params={}, started_at=at_ms,
            finished_at=at_ms, error=error).on_conflict_do_nothing(
            index_elements=[Run.run_id]).returning(Run.run_id)
        with self.engine.begin() as connection:
            ended = connection.execute(end).first() is not None
            if not ended:
                ended = connection.execute(create).first() is not None
        return self.run(run_id) if ended else None

    def run(self, run_id: str) -> Run | None:
        with Session(self.engine) as session:
            return session.get(Run, run_id)

    # Health history ----------------------------------------------------------------------------

    def add_health(self, generated_at: float, healthy: bool, report: Mapping[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.add(HealthRecord(generated_at=generated_at, healthy=healthy,
                                     report=dict(report)))

    def health_history(self, limit: int = 100) -> list[HealthRecord]:
        with Session(self.engine) as session:
            return list(session.scalars(select(HealthRecord)
                                        .order_by(HealthRecord.generated_at.desc()).limit(limit)))

    # Viewer queries (the runs list) -----------------------------------------------------------

    def recent_runs(self, limit: int = 50, status: RunStatus | None = None) -> list[Run]:
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


__all__ = ["LogStore", "SeqConflict", "make_engine", "store_for", "upgrade"]
