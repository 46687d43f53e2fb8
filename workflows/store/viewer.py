"""Queries for the runs list (``relaycast runs``, the viewer)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from workflows.models import LogLine, Run, RunStatus
from workflows.store.base import StoreBase


class Viewer(StoreBase):
    """The recent runs and their line counts."""

    def recent_runs(self, limit: int = 50, status: RunStatus | None = None,
                    workflow: str | None = None) -> list[Run]:
        """The ``limit`` most recently started runs, newest first (only ``status`` ones, and
        only runs of ``workflow``, if given).

        A ``workflow`` holding NUL matches no run: no stored name can hold one (PostgreSQL's
        text cannot), and PostgreSQL refuses to even compare such a string.
        """
        if workflow is not None and "\x00" in workflow:
            return []
        query = select(Run).order_by(Run.started_at.desc(), Run.run_id).limit(limit)
        if status is not None:
            query = query.where(Run.status == status)
        if workflow is not None:
            query = query.where(Run.workflow == workflow)
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
