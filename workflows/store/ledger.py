"""The delivery ledger: each stored line's broadcast outcome, the sweeper's and
``relaycast replay``'s claims on lines to send again, and which lines are owed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, text, update
from sqlalchemy.orm import Session

from workflows.models import LineState, LogLine
from workflows.store.base import StoreBase

#: Ids in one ``IN (...)`` list (SQLite allows 32,766 parameters).
_IDS_PER_STATEMENT = 1000


class Ledger(StoreBase):
    """Outcomes, claims and replay selection of stored lines."""

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
            self._outcome_commit(connection)
            for run_id, first, last in ranges:
                connection.execute(
                    update(LogLine)
                    .where(LogLine.run_id == run_id, LogLine.seq >= first, LogLine.seq <= last)
                    .values(broadcast_state=state, broadcaster=broadcaster, swept_at=None))

    def _outcome_commit(self, connection: Any) -> None:
        """On PostgreSQL, an outcome's commit does not wait for the WAL to reach the disk
        (``synchronous_commit = off``, this transaction only). Losing it in a database crash
        costs nothing but a repeat: its lines look pending again, and the sweeper sends them
        again (at least once; clients merge by seq). Stored lines keep the durable commit."""
        if self.engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL synchronous_commit = off"))

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
                      since_ms: int | None = None
                      ) -> dict[tuple[str, str, bool], tuple[int, int | None]]:
        """Replayable lines per ``(run_id, state, in flight)``: how many, and (in flight) the
        latest claim's ``swept_at`` (when the last of them was re-enqueued), else None."""
        in_flight = ~self._unclaimed(claimed_before_ms)
        flag = case((in_flight, 1), else_=0)
        latest = func.max(case((in_flight, LogLine.swept_at), else_=None))
        query = (select(LogLine.run_id, LogLine.broadcast_state, flag, func.count(), latest)
                 .where(self._replayable(stale_before_ms=stale_before_ms,
                                         include_logged=include_logged, run_id=run_id,
                                         since_ms=since_ms))
                 .group_by(LogLine.run_id, LogLine.broadcast_state, flag))
        with self.engine.connect() as connection:
            return {(run, state, bool(busy)): (int(n), None if at is None else int(at))
                    for run, state, busy, n, at in connection.execute(query)}

    def claim_for_replay(self, ids: Sequence[int], *, at_ms: int, claimed_before_ms: int
                         ) -> set[int]:
        """Mark lines re-enqueued at ``at_ms`` (``swept_at``), only those still replayable and
        not claimed since ``claimed_before_ms``; return the ids this call claimed.

        One conditional UPDATE per chunk, all in one transaction: of two replays at once, each
        line goes to one. SQLite runs one writer at a time, so the second UPDATE (waiting on
        the busy timeout) sees the first one's claims. PostgreSQL (READ COMMITTED) makes the
        second wait on the rows the first locked and, once the first commits, evaluates the
        WHERE again on the new row versions: a row claimed meanwhile no longer matches and is
        neither updated nor returned (tests/test_replay.py holds one claim open to show both).
        """
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
