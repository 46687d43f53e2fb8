"""Runs: their start, their end (exactly once) and their record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from workflows.models import Run, RunCounter, RunStatus
from workflows.store.base import StoreBase


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

    def last_seq(self, run_id: str) -> int:
        """The seq of the run's last line stored so far (its counter; 0: none). Read when the
        run ends: its end event is published after that line (``last_seq`` in its data)."""
        with self.engine.connect() as connection:
            last = connection.execute(
                select(RunCounter.last_seq).where(RunCounter.run_id == run_id)).scalar()
        return int(last) if last is not None else 0

    def run(self, run_id: str) -> Run | None:
        with Session(self.engine) as session:
            return session.get(Run, run_id)
