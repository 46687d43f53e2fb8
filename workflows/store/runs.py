"""Runs: their start, their end (exactly once) and their record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from workflows.models import Run, RunCounter, RunStatus
from workflows.store.base import StoreBase

#: Statuses a run's real end may replace: running, and lost (its task was alive after all).
ENDABLE = (RunStatus.RUNNING, RunStatus.LOST)


class Runs(StoreBase):
    """Start, finish and read runs."""

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
        in SQL (its start was lost or is still in flight) is recorded as ended. A run marked
        ``lost`` can still be ended: its task was alive after all (a heartbeat that could not
        reach Redis, a step that waited in the queue longer than the bound), and its real end
        wins — announced once, after the ``lost`` (see :meth:`mark_lost`).
        """
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        end = (update(Run).where(Run.run_id == run_id, Run.status.in_(ENDABLE))
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

    def last_seq(self, run_id: str) -> int:
        """The seq of the run's last line stored so far (its counter; 0: none). Read when the
        run ends: its end event is published after that line (``last_seq`` in its data)."""
        with self.engine.connect() as connection:
            last = connection.execute(
                select(RunCounter.last_seq).where(RunCounter.run_id == run_id)).scalar()
        return int(last) if last is not None else 0

    def running_runs(self, limit: int = 10_000) -> list[tuple[str, int]]:
        """``(run_id, started_at)`` of runs still ``running``, oldest first (the lost-run
        check reads their heartbeats)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Run.run_id, Run.started_at).where(Run.status == RunStatus.RUNNING)
                .order_by(Run.started_at).limit(limit)).all()
        return [(str(run_id), int(started_at)) for run_id, started_at in rows]

    def count_running(self) -> int:
        """How many runs are ``running`` (``relaycast_runs_running`` in ``GET /metrics``)."""
        with self.engine.connect() as connection:
            return int(connection.execute(
                select(func.count()).select_from(Run).where(Run.status == RunStatus.RUNNING)
            ).scalar() or 0)

    def mark_lost(self, run_id: str, started_at: int, reason: str, at_ms: int | None = None
                  ) -> Run | None:
        """Mark a running run ``lost``; return it when this call did, None otherwise (it had
        ended, or was started again since ``started_at`` was read: a redelivered task).

        The same conditional UPDATE as :meth:`finish_run`: of two beats deciding at once,
        or a beat and the run's real end, exactly one changes the row and announces it.
        """
        at_ms = int(time.time() * 1000) if at_ms is None else at_ms
        lose = (update(Run).where(Run.run_id == run_id, Run.status == RunStatus.RUNNING,
                                  Run.started_at == started_at)
                .values(status=RunStatus.LOST, error=reason, finished_at=at_ms)
                .returning(Run.run_id))
        with self.engine.begin() as connection:
            lost = connection.execute(lose).first() is not None
        return self.run(run_id) if lost else None

    def run(self, run_id: str) -> Run | None:
        with Session(self.engine) as session:
            return session.get(Run, run_id)
