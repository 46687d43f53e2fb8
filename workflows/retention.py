"""Retention: delete what is older than a bound, in short transactions that never stall the
workflows writing meanwhile.

What goes, for a bound ``before_ms`` (epoch ms):

* **log lines** with ``ts`` before it, each by its own age, whatever its run's state: a run
  still running after longer than the retention loses its oldest lines and keeps the rest
  (as rotated logs do), so that one endless run cannot grow the store for ever;
* **runs** that ended before it; a run still ``running`` is kept however old it is (a run
  left running by a crashed worker stays listed until something ends it);
* **run counters** of runs left with no line that are not running. A counter numbers a
  run's next line: deleting it while the run has lines would restart its seqs at 1 and
  collide with them, and deleting it while the run runs would restart them under the eyes of
  a viewer that has seen higher ones. So a counter goes only when neither holds, checked
  under the counter's row lock (see :func:`_prune_counters`);
* **health reports** generated before it.

How, so that inserts never wait behind it: every statement deletes at most one batch
(``PruneOptions.batch_lines`` lines, ``batch_rows`` other rows) in its own transaction,
selected by primary key — lines by ascending ``id`` ranges up to the highest id of a line
older than the bound (found once through the ``ts`` index), so no batch reads what an
earlier one deleted — and pauses between batches. On PostgreSQL a DELETE takes row locks
only, which inserts of other rows never wait for; on SQLite (one writer at a time) a batch
holds the write lock for milliseconds and the pause lets the writers in. Every DELETE
repeats its condition (``ts < bound``, ``finished_at < bound``, ...), so a row that changed
between the choice of a batch and its deletion (a run started again) is never taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select

from workflows.models import HealthRecord, LogLine, Run, RunCounter, RunStatus
from workflows.store import LogStore


@dataclass
class PruneCounts:
    """Rows deleted (or, for a dry run, that would be)."""

    lines: int = 0
    runs: int = 0
    counters: int = 0
    health_reports: int = 0

    def add(self, other: PruneCounts) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    @property
    def total(self) -> int:
        return self.lines + self.runs + self.counters + self.health_reports


@dataclass
class PruneResult:
    deleted: PruneCounts
    #: Transactions (one per batch).
    batches: int = 0
    seconds: float = 0.0
    #: False when the time budget ran out first (the next prune goes on).
    complete: bool = True


@dataclass(frozen=True)
class PruneOptions:
    batch_lines: int = 2000
    #: Runs, counters and health reports per batch.
    batch_rows: int = 1000
    #: Sleep between two batches (lets SQLite's writers in; spreads PostgreSQL's I/O).
    pause_s: float = 0.02
    #: Stop after this long (a later prune continues); None: until done.
    time_budget_s: float | None = None


def _orphan_counter(lines_from_ms: int | None = None) -> ColumnElement[bool]:
    """The counter's run has no line left (``lines_from_ms``: none stored from then on, i.e.
    none left once older lines are pruned) and is not running."""
    no_line = ~exists().where(LogLine.run_id == RunCounter.run_id,
                              *([] if lines_from_ms is None else [LogLine.ts >= lines_from_ms]))
    not_running = ~exists().where(Run.run_id == RunCounter.run_id, Run.status == RunStatus.RUNNING)
    return no_line & not_running


def _ended_before(before_ms: int) -> ColumnElement[bool]:
    return (Run.finished_at < before_ms) & (Run.status != RunStatus.RUNNING)


def bound_ms(older_than_s: float) -> int:
    """The prune bound for "older than ``older_than_s``", as of now (epoch ms)."""
    return int((time.time() - older_than_s) * 1000)


def prunable(store: LogStore, before_ms: int) -> PruneCounts:
    """What :func:`prune` would delete now (a dry run: counts only)."""
    with store.engine.connect() as connection:
        def count(query: Any) -> int:
            return int(connection.execute(query).scalar() or 0)

        return PruneCounts(
            lines=count(select(func.count()).select_from(LogLine).where(LogLine.ts < before_ms)),
            runs=count(select(func.count()).select_from(Run).where(_ended_before(before_ms))),
            counters=count(select(func.count()).select_from(RunCounter)
                           .where(_orphan_counter(before_ms))),
            health_reports=count(select(func.count()).select_from(HealthRecord).where(
                HealthRecord.generated_at < before_ms / 1000)),
        )


class _Batches:
    """Pauses between batches, counts them, and says when the time budget is spent."""

    def __init__(self, options: PruneOptions, sleep: Callable[[float], None]) -> None:
        self.options = options
        self.sleep = sleep
        self.started = time.monotonic()
        self.count = 0
        self.out_of_time = False

    def next(self) -> bool:
        """Call before each batch: False when the budget is spent."""
        budget = self.options.time_budget_s
        if budget is not None and time.monotonic() - self.started >= budget:
            self.out_of_time = True
            return False
        if self.count and self.options.pause_s > 0:
            self.sleep(self.options.pause_s)
        self.count += 1
        return True


def prune(store: LogStore, before_ms: int, options: PruneOptions | None = None, *,
          sleep: Callable[[float], None] = time.sleep) -> PruneResult:
    """Delete what is older than ``before_ms`` (see the module docstring), batch by batch."""
    options = options or PruneOptions()
    batches = _Batches(options, sleep)
    deleted = PruneCounts()
    for step in (_prune_lines, _prune_runs, _prune_counters, _prune_health):
        deleted.add(step(store, before_ms, options, batches))
        if batches.out_of_time:
            break
    return PruneResult(deleted=deleted, batches=batches.count,
                       seconds=time.monotonic() - batches.started,
                       complete=not batches.out_of_time)


def _prune_lines(store: LogStore, before_ms: int, options: PruneOptions,
                 batches: _Batches) -> PruneCounts:
    old = LogLine.ts < before_ms
    with store.engine.connect() as connection:
        highest = connection.execute(select(func.max(LogLine.id)).where(old)).scalar()
    if highest is None:
        return PruneCounts()
    deleted, after = 0, 0
    while batches.next():
        with store.engine.begin() as connection:
            ids = list(connection.execute(
                select(LogLine.id).where(LogLine.id > after, LogLine.id <= highest, old)
                .order_by(LogLine.id).limit(options.batch_lines)).scalars())
            if not ids:
                break
            deleted += connection.execute(delete(LogLine).where(
                LogLine.id >= ids[0], LogLine.id <= ids[-1], old)).rowcount
        after = ids[-1]
    return PruneCounts(lines=deleted)


def _delete_by_key(store: LogStore, batches: _Batches, key: Any, condition: ColumnElement[bool],
                   limit: int) -> int:
    """Delete the rows matching ``condition``, ``limit`` primary keys (``key``) per batch."""
    deleted = 0
    while batches.next():
        with store.engine.begin() as connection:
            ids = list(connection.execute(
                select(key).where(condition).order_by(key).limit(limit)).scalars())
            if not ids:
                break
            deleted += connection.execute(
                delete(key.table).where(key.in_(ids), condition)).rowcount
    return deleted


def _prune_runs(store: LogStore, before_ms: int, options: PruneOptions,
                batches: _Batches) -> PruneCounts:
    return PruneCounts(runs=_delete_by_key(store, batches, Run.run_id,
                                           _ended_before(before_ms), options.batch_rows))


def _prune_counters(store: LogStore, before_ms: int, options: PruneOptions,
                    batches: _Batches) -> PruneCounts:
    """Counters of runs with no line that are not running, page by page of run ids.

    A writer allocating seqs locks its run's counter row (``INSERT … ON CONFLICT DO
    UPDATE``) until its lines are committed. So each page first locks the counters that look
    orphaned (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` — a counter a writer holds is in use,
    skip it), then deletes them in a second statement, whose fresh snapshot sees every line
    committed before the locks were taken; a writer coming later waits for this short
    transaction and then starts a new counter for a run with no line, which cannot collide.
    SQLite runs the DELETE under its single write lock, which gives the same guarantee.
    """
    orphan = _orphan_counter()
    deleted, after = 0, ""
    while batches.next():
        with store.engine.begin() as connection:
            page = list(connection.execute(
                select(RunCounter.run_id).where(RunCounter.run_id > after)
                .order_by(RunCounter.run_id).limit(options.batch_rows)).scalars())
            if not page:
                break
            after = page[-1]
            locked = list(connection.execute(
                select(RunCounter.run_id).where(RunCounter.run_id.in_(page), orphan)
                .with_for_update(skip_locked=True)).scalars())
            if locked:
                deleted += connection.execute(
                    delete(RunCounter).where(RunCounter.run_id.in_(locked), orphan)).rowcount
    return PruneCounts(counters=deleted)


def _prune_health(store: LogStore, before_ms: int, options: PruneOptions,
                  batches: _Batches) -> PruneCounts:
    return PruneCounts(health_reports=_delete_by_key(
        store, batches, HealthRecord.id, HealthRecord.generated_at < before_ms / 1000,
        options.batch_rows))


__all__ = ["PruneCounts", "PruneOptions", "PruneResult", "prunable", "prune"]
