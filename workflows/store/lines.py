"""Log lines, numbered where they are stored: a run written by many processes on many hosts
at once gets contiguous seqs from 1, every line exactly once, and a line that fails to store is
never silent (:meth:`Lines.append`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.orm import Session

from broadcasters.wire import LineEvent
from workflows.models import LineState, LogLine, RunCounter
from workflows.store.base import StoreBase

logger = logging.getLogger(__name__)


class SeqConflict(Exception):
    """Lines whose (run_id, seq) was already taken: the run's counter was behind its lines
    (rows written without it, by a tool or an older relaycast)."""

    def __init__(self, run_ids: set[str], lost: int) -> None:
        super().__init__(f"{lost} line(s) of {len(run_ids)} run(s) collided with stored lines")
        self.run_ids = run_ids
        self.lost = lost


#: Times :meth:`LogStore.append` renumbers after a conflict before it gives up.
MAX_RENUMBERINGS = 3

#: A flush's lines on PostgreSQL: one statement whatever their number, the rows sent as ONE
#: JSON document (encoded by the C encoder in one call, no per-row or per-element work in
#: Python) that the server unpacks with ``json_to_recordset``; one row back per run (how many
#: were stored). ``data`` stays a JSON value inside the document.
_PG_INSERT_LINES: TextClause = text(
    "WITH stored AS ("
    " INSERT INTO log_lines (run_id, seq, ts, level, message, data, broadcast_state)"
    " SELECT r, s, t, l, m, d, :state"
    " FROM json_to_recordset(CAST(:rows AS json))"
    "  AS u(r text, s integer, t bigint, l text, m text, d json)"
    " ON CONFLICT (run_id, seq) DO NOTHING RETURNING run_id"
    ") SELECT run_id, count(*) FROM stored GROUP BY run_id")


class Lines(StoreBase):
    """Appending a run's lines and reading them back."""

    #: Lines renumbered after a conflict with lines already stored (never silent).
    renumbered: int

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
            stored: dict[str, int] = {}
            if self.engine.dialect.name == "postgresql":
                stored = self._insert_document(connection, rows)
            else:
                insert = (dialect.insert(LogLine)
                          .on_conflict_do_nothing(index_elements=["run_id", "seq"])
                          .returning(LogLine.run_id))
                for (run_id,) in connection.execute(insert, rows):
                    stored[run_id] = stored.get(run_id, 0) + 1
            short = {run_id for run_id, n in sizes.items() if stored.get(run_id, 0) < n}
            if short:
                connection.rollback()
                raise SeqConflict(short, sum(sizes[r] - stored.get(r, 0) for r in short))
        return out

    @staticmethod
    def _insert_document(connection: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """PostgreSQL: insert ``rows`` (all pending) in one statement; lines stored per run."""
        serialize = connection.dialect._json_serializer or json.dumps
        document = serialize([{"r": row["run_id"], "s": row["seq"], "t": row["ts"],
                               "l": row["level"], "m": row["message"], "d": row["data"]}
                              for row in rows])
        params = {"state": str(LineState.PENDING), "rows": document}
        return {str(run_id): int(n)
                for run_id, n in connection.execute(_PG_INSERT_LINES, params)}

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

    def lines(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[LogLine]:
        with Session(self.engine) as session:
            query = (select(LogLine).where(LogLine.run_id == run_id, LogLine.seq > after_seq)
                     .order_by(LogLine.seq))
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))
