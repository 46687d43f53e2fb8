"""Retention (workflows.retention): exactly what is older than the bound goes, in batches,
on SQLite and PostgreSQL, while workflows keep writing."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from support.runs import run_env, start_run
from support.seeding import seed_lines
from support.workers import CeleryBeat, CeleryWorker, Started, one_line_error, relaycast_cli

from workflows.models import HealthRecord, LogLine, RunCounter, RunStatus
from workflows.retention import PruneCounts, PruneOptions, prunable, prune
from workflows.store import LogStore

BOUND = 1_700_000_000_000
DAY_MS = 86_400_000
#: Small batches, so that every kind of row takes several.
SMALL = PruneOptions(batch_lines=2, batch_rows=1, pause_s=0)


def _row(run_id: str, seq: int, ts: int) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts, "level": "info",
            "message": f"{run_id} line {seq}", "data": {}}


def _drafts(count: int, ts: int = BOUND + DAY_MS) -> list[dict[str, Any]]:
    return [{"ts": ts, "level": "info", "message": f"new {i}", "data": {}} for i in range(count)]


def _health_reports(store: LogStore) -> list[HealthRecord]:
    """The health reports left, newest first."""
    with Session(store.engine) as session:
        return list(session.scalars(select(HealthRecord).order_by(HealthRecord.generated_at.desc())))


def _first_new_seqs(store: LogStore, run_ids: list[str], ts: int = BOUND + DAY_MS) -> dict[str, int]:
    """The seq each run's next line gets (appended now): where its counter was."""
    return {run_id: events[0]["seq"]
            for run_id, events in store.append([(r, _drafts(1, ts)) for r in run_ids])}


def _seed(store: LogStore) -> None:
    seed_lines(
        store,
        [_row("old", seq, BOUND - 6 + seq) for seq in range(1, 6)]  # ts BOUND-5 .. BOUND-1
        + [_row("mixed", seq, ts) for seq, ts in enumerate(
            (BOUND - 2, BOUND - 1, BOUND, BOUND + 1), start=1)]
        + [_row("new", seq, BOUND + seq) for seq in (1, 2)]
        + [_row("running-old", seq, BOUND - 1000 + seq) for seq in (1, 2, 3)])
    store.start_run("old", "etl", {}, at_ms=BOUND - 10)
    store.finish_run("old", RunStatus.SUCCEEDED, at_ms=BOUND - 1)
    store.start_run("mixed", "etl", {}, at_ms=BOUND - 10)
    store.finish_run("mixed", RunStatus.SUCCEEDED, at_ms=BOUND)  # not older than the bound
    store.start_run("new", "etl", {}, at_ms=BOUND + 1)
    store.finish_run("new", RunStatus.FAILED, "boom", at_ms=BOUND + 5)
    store.start_run("running-old", "agent", {}, at_ms=BOUND - 10 * DAY_MS)  # still running
    store.finish_run("failed-no-lines", RunStatus.FAILED, "x", at_ms=BOUND - 100)
    for generated_at_ms in (BOUND - 1000, BOUND - 1, BOUND, BOUND + 1000):
        store.add_health(generated_at_ms / 1000, True, {"at": generated_at_ms})


def test_prune_deletes_exactly_what_is_older_than_the_bound(store: LogStore) -> None:
    _seed(store)
    expected = PruneCounts(lines=5 + 2 + 3, runs=2, counters=1, health_reports=2)
    assert prunable(store, BOUND) == expected, "the dry run counts what the prune deletes"

    result = prune(store, BOUND, SMALL)

    assert result.deleted == expected
    assert result.complete
    assert result.batches >= 10 // 2 + 2 + 4, "one short transaction per batch"
    assert prunable(store, BOUND) == PruneCounts()
    assert store.lines("old") == []
    assert [(line.seq, line.ts) for line in store.lines("mixed")] == [(3, BOUND), (4, BOUND + 1)]
    assert [line.seq for line in store.lines("new")] == [1, 2]
    assert store.lines("running-old") == [], "old lines go, even of a run still running"
    assert store.run("old") is None and store.run("failed-no-lines") is None
    assert [store.run(r) is not None for r in ("mixed", "new", "running-old")] == [True] * 3
    assert [r.generated_at for r in _health_reports(store)] == [
        (BOUND + 1000) / 1000, BOUND / 1000]
    # Counters: kept for runs with lines or still running, so seqs continue where they were
    # (a running run after its deleted lines); a run with nothing left starts again at 1,
    # colliding with nothing.
    assert _first_new_seqs(store, ["old", "mixed", "new", "running-old"]) == {
        "old": 1, "mixed": 5, "new": 3, "running-old": 4}
    assert store.renumbered == 0


def test_a_second_prune_finds_nothing_and_a_later_bound_takes_the_rest(store: LogStore) -> None:
    _seed(store)
    prune(store, BOUND, SMALL)
    assert prune(store, BOUND, SMALL).deleted == PruneCounts()
    later = prune(store, BOUND + DAY_MS)
    assert later.deleted.lines == 4 and later.deleted.runs == 2  # mixed, new; running-old stays
    assert store.run("running-old") is not None
    assert _first_new_seqs(store, ["running-old"]) == {"running-old": 4}
    assert store.renumbered == 0


def test_a_spent_time_budget_stops_the_prune_and_says_so(store: LogStore) -> None:
    _seed(store)
    result = prune(store, BOUND, PruneOptions(time_budget_s=0))
    assert (result.complete, result.deleted) == (False, PruneCounts())
    assert prune(store, BOUND).complete


def test_a_prune_while_runs_append_loses_no_line_and_never_reuses_a_seq(
        store: LogStore, database_url: str) -> None:
    """Runs whose old lines are being deleted keep logging: every new line is stored, numbered
    on without a gap or a repeat, and the store never has to renumber.

    ``busy`` runs log before and during the prune: their counters must stay (they have lines).
    ``quiet`` runs only had old lines and start logging again at various moments of the prune:
    their numbering may start again at 1 only if their counter went before their first new
    line; a counter deleted under a new line would restart the numbering in mid-run.
    """
    busy = [f"busy-{i}" for i in range(20)]
    quiet = [f"quiet-{i}" for i in range(40)]
    seed_lines(store, [_row(run_id, seq, BOUND - 5000 + seq)
                       for run_id in busy + quiet for seq in range(1, 51)])
    writer = LogStore.from_url(database_url)
    appended: dict[str, list[int]] = {run_id: [] for run_id in busy + quiet}
    first_round, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            woken: list[str] = []
            while not done.is_set() or len(woken) < len(quiet):
                # Wake the next quiet run once its old lines are gone: its counter is then
                # what the prune looks at next, while the run starts logging again.
                asleep = quiet[len(woken):]
                if asleep and (done.is_set() or not writer.lines(asleep[0], limit=1)):
                    woken.append(asleep[0])
                for run_id, events in writer.append([(r, _drafts(3)) for r in busy + woken]):
                    appended[run_id].extend(e["seq"] for e in events)
                first_round.set()
        except BaseException as exc:
            errors.append(exc)
            first_round.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert first_round.wait(30)
        result = prune(store, BOUND, PruneOptions(batch_lines=100, batch_rows=1, pause_s=0.003))
    finally:
        done.set()
        thread.join(60)
    writer.close()
    assert not errors, errors
    assert result.deleted.lines == 60 * 50
    assert writer.renumbered == 0
    for run_id in busy + quiet:
        seqs = appended[run_id]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (run_id, seqs)
        if run_id in busy:
            assert seqs[0] == 51, "the run had lines the whole time: its counter stayed"
        else:
            assert seqs[0] in (1, 51), (run_id, seqs)
        assert [line.seq for line in store.lines(run_id)] == seqs, "every appended line stored"


def test_a_counter_a_writer_holds_is_not_deleted_under_its_new_line(store: LogStore) -> None:
    """The narrow case, made to happen: a run with a counter but no line (its lines were
    pruned) logs again while the prune looks at its counter. The writer has advanced the
    counter and not yet committed its line; the prune must not delete the counter then."""
    seed_lines(store, [_row("reborn", seq, BOUND - 10) for seq in (1, 2)])
    with store.engine.begin() as connection:  # what an earlier prune left: a counter alone
        connection.execute(delete(LogLine).where(LogLine.run_id == "reborn"))
    dialect = store._dialect()
    bump = dialect.insert(RunCounter).values(run_id="reborn", last_seq=1)
    bump = bump.on_conflict_do_update(index_elements=[RunCounter.run_id],
                                      set_={"last_seq": RunCounter.last_seq + 1})
    results = []
    with store.engine.connect() as writer:
        transaction = writer.begin()
        writer.execute(bump)  # the writer's first statement: counter 2 -> 3, locked
        pruning = threading.Thread(target=lambda: results.append(prune(store, BOUND)))
        pruning.start()
        time.sleep(1.0)  # the prune reaches the counter (PostgreSQL: skips it; SQLite: waits)
        writer.execute(dialect.insert(LogLine).values(**_row("reborn", 3, BOUND + 1),
                                                      broadcast_state="pending"))
        transaction.commit()
    pruning.join(60)
    assert results and results[0].complete
    assert results[0].deleted.counters == 0
    assert [line.seq for line in store.lines("reborn")] == [3]
    [(_, events)] = store.append([("reborn", _drafts(1))])
    assert events[0]["seq"] == 4
    assert store.renumbered == 0


# By hand (relaycast prune) and by beat (relaycast.prune) ---------------------------------------


def _seed_around_now(store: LogStore, now_ms: int) -> None:
    old, recent = now_ms - 2 * DAY_MS, now_ms - 3_600_000
    seed_lines(store, [_row("two-days", seq, old + seq) for seq in (1, 2, 3)]
                      + [_row("an-hour", seq, recent + seq) for seq in (1, 2)])
    store.start_run("two-days", "etl", {}, at_ms=old)
    store.finish_run("two-days", RunStatus.SUCCEEDED, at_ms=old + 10)
    store.start_run("an-hour", "etl", {}, at_ms=recent)
    store.finish_run("an-hour", RunStatus.SUCCEEDED, at_ms=recent + 10)
    store.add_health(old / 1000, True, {"old": True})
    store.add_health(recent / 1000, True, {"old": False})


def _figures(stdout: str) -> dict[str, int]:
    found = re.findall(r"^  (log lines|runs|run counters|health reports)\s+([\d,]+)$", stdout,
                       re.MULTILINE)
    return {label: int(value.replace(",", "")) for label, value in found}


def _left(store: LogStore) -> tuple[list[str], list[str], list[bool]]:
    runs = [r.run_id for r in store.recent_runs()]
    lines = [f"{r}:{line.seq}" for r in ("two-days", "an-hour") for line in store.lines(r)]
    return runs, lines, [bool(h.report["old"]) for h in _health_reports(store)]


def test_relaycast_prune_counts_with_dry_run_then_deletes_what_is_older(
        store: LogStore, database_url: str) -> None:
    _seed_around_now(store, int(time.time() * 1000))
    env = {"DATABASE_URL": database_url}
    dry = relaycast_cli("prune", "--older-than", "1d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    expected = {"log lines": 3, "runs": 1, "run counters": 1, "health reports": 1}
    assert _figures(dry.stdout) == expected
    assert dry.stdout.startswith("would delete, older than 24h (before ")
    assert "nothing was deleted" in dry.stdout
    assert len(_left(store)[1]) == 5, "a dry run deletes nothing"

    done = relaycast_cli("prune", "--older-than", "1d", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted, older than 24h (before ")
    assert _figures(done.stdout) == expected
    assert _left(store) == (["an-hour"], ["an-hour:1", "an-hour:2"], [False])
    again = relaycast_cli("prune", "--older-than", "1d", env=env)
    assert _figures(again.stdout) == dict.fromkeys(expected, 0)


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["prune", "--older-than", "soon"], {}, "not a duration: 'soon'"),
    (["prune", "--older-than", "0s"], {}, "duration must be positive"),
    (["prune"], {"RELAYCAST_RETENTION_DAYS": "0"}, "say what to delete with --older-than"),
    (["prune"], {"RELAYCAST_RETENTION_DAYS": "-3"}, "RELAYCAST_RETENTION_DAYS"),
])
def test_relaycast_prune_refuses_a_bound_it_cannot_use_in_one_line(
        argv: list[str], env: dict[str, str], says: str, sqlite_url: str) -> None:
    result = relaycast_cli(*argv, env={"DATABASE_URL": sqlite_url, **env})
    assert result.returncode == 2
    assert says in one_line_error(result)
    assert result.stdout == ""


def test_beat_prunes_what_is_older_than_the_retention_days(
        broker: str, sqlite_url: str, workers: Started,
        open_store: Callable[[str], LogStore]) -> None:
    store = open_store(sqlite_url)
    _seed_around_now(store, int(time.time() * 1000))
    env = run_env(broker, sqlite_url, RELAYCAST_BROADCASTERS="log", RELAYCAST_RETENTION_DAYS="1",
                  RELAYCAST_PRUNE_INTERVAL_S="1")
    worker, beat = CeleryWorker(env, concurrency=1), CeleryBeat(env)
    workers.start(worker, beat)
    deadline = time.monotonic() + 60
    while store.lines("two-days") and time.monotonic() < deadline:
        time.sleep(0.5)
    deadline = time.monotonic() + 30  # the rest of that run of the task: runs, counters, health
    while _left(store) != (["an-hour"], ["an-hour:1", "an-hour:2"], [False]):
        assert time.monotonic() < deadline, _left(store)
        time.sleep(0.5)
    assert _first_new_seqs(store, ["two-days", "an-hour"], int(time.time() * 1000)) == {
        "two-days": 1, "an-hour": 3}
    assert store.renumbered == 0
    assert "retention: deleted 3 line(s), 1 run(s), 1 run counter(s) and 1 health report(s) " \
           "older than 1 day(s)" in worker.log_tail(200_000)


def test_beat_schedules_the_prune_unless_everything_is_kept() -> None:
    from config import load_settings
    from tasks.celery_app import create_app

    schedule = create_app(load_settings(RELAYCAST_PRUNE_INTERVAL_S="7200")).conf.beat_schedule
    assert schedule["relaycast-prune"] == {"task": "relaycast.prune", "schedule": 7200.0,
                                           "options": {"expires": 7200.0}}
    assert {"relaycast-health", "relaycast-sweep"} <= set(schedule)
    kept = create_app(load_settings(RELAYCAST_RETENTION_DAYS="0")).conf.beat_schedule
    assert set(kept) == {"relaycast-health", "relaycast-sweep", "relaycast-runs_lost"}


#: A nightly job that logs until the test says stop (a file appears): it is running for the
#: whole prune however slow the machine (arranged, not hoped for).
NIGHTLY_MODULE = """
import os
import time

from relaycast import LogStream, workflow


@workflow("nightly")
def nightly(log: LogStream, *, stop_file: str) -> int:
    i = 0
    while not os.path.exists(stop_file):
        i += 1
        log.info(f"nightly line {i}", i=i)
        time.sleep(0.003)
    return i
"""


@pytest.mark.timeout(180)
def test_a_prune_while_a_workflow_logs_loses_none_of_its_lines(
        broker: str, database_url: str, workers: Started,
        open_store: Callable[[str], LogStore], tmp_path: Path) -> None:
    """30,000 old lines go while a workflow logs on a run id that also has old lines (a
    nightly job that reuses its id): its lines are all stored, numbered on."""
    store = open_store(database_url)
    old = int(time.time() * 1000) - 3 * DAY_MS
    run_id = f"nightly-{uuid.uuid4().hex[:6]}"
    old_runs = [f"old-{i}" for i in range(30)]
    seed_lines(store, [_row(r, seq, old + seq) for r in old_runs for seq in range(1, 1001)]
                      + [_row(run_id, seq, old + seq) for seq in range(1, 201)])
    for r in [*old_runs, run_id]:
        store.start_run(r, "etl", {}, at_ms=old)
        store.finish_run(r, RunStatus.SUCCEEDED, at_ms=old + 5000)
    (tmp_path / "nightly_jobs.py").write_text(NIGHTLY_MODULE)
    stop_file = tmp_path / "stop"
    env = run_env(broker, database_url, RELAYCAST_BROADCASTERS="log",
                  RELAYCAST_WORKFLOWS="nightly_jobs", PYTHONPATH=str(tmp_path))
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    start_run(env, "nightly", run_id, stop_file=str(stop_file))
    deadline = time.monotonic() + 60
    while store.line_counts([run_id])[run_id][1] <= 300:  # the run is logging (seqs 201, ...)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    highest_before = store.line_counts([run_id])[run_id][1]

    pruned = relaycast_cli("prune", "--older-than", "1d", env=env)

    highest_after = store.line_counts([run_id])[run_id][1]
    run = store.run(run_id)
    assert run is not None and run.status == RunStatus.RUNNING, "the prune ran while it logged"
    stop_file.touch()
    assert pruned.returncode == 0, pruned.stderr
    assert _figures(pruned.stdout) == {"log lines": 30_200, "runs": 30, "run counters": 30,
                                       "health reports": 0}
    assert highest_after > highest_before, "lines were stored during the prune"
    deadline = time.monotonic() + 90
    while (run := store.run(run_id)) is None or run.status == RunStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert run.status == RunStatus.SUCCEEDED
    lines = store.lines(run_id)
    logged = len(lines)
    assert logged > 300
    assert [line.seq for line in lines] == list(range(201, 201 + logged)), (
        "none lost, numbered on")
    assert [line.data["i"] for line in lines] == list(range(1, logged + 1))
    assert all(store.lines(r) == [] and store.run(r) is None for r in old_runs)
