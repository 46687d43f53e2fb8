"""LogStore on SQLite and PostgreSQL: seqs allocated where lines are stored, line states,
runs, and migrations."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import insert, inspect

from workflows.models import LineState, LogLine, RunStatus
from workflows.store import LogStore, current_revision, head_revision, make_engine, store_for

PENDING, SENT, FAILED = LineState.PENDING, LineState.SENT, LineState.FAILED


def _row(run_id: str, seq: int, message: str | None = None, *, level: str = "info",
         data: dict[str, Any] | None = None, ts: int | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts if ts is not None else 1_700_000_000_000 + seq,
            "level": level, "message": message if message is not None else f"{run_id} line {seq}",
            "data": data if data is not None else {}}


def _states(store: LogStore, run_id: str) -> dict[int, tuple[str, str | None]]:
    return {line.seq: (line.broadcast_state, line.broadcaster) for line in store.lines(run_id)}


def _drafts(*messages: str) -> list[dict[str, Any]]:
    return [{"ts": 1_700_000_000_000 + i, "level": "info", "message": m, "data": {"i": i}}
            for i, m in enumerate(messages)]


# Numbering ---------------------------------------------------------------------------------------


def test_append_numbers_each_run_from_1_and_continues_across_calls(store: LogStore) -> None:
    first = store.append([("run-a", _drafts("a1", "a2")), ("run-b", _drafts("b1"))])
    assert [(run, [e["seq"] for e in events]) for run, events in first] == [
        ("run-a", [1, 2]), ("run-b", [1])]
    assert first[0][1][0] == {"seq": 1, "ts": 1_700_000_000_000, "level": "info", "message": "a1",
                              "data": {"i": 0}}
    second = store.append([("run-a", _drafts("a3"))])
    assert second[0][1][0]["seq"] == 3
    assert [line.message for line in store.lines("run-a")] == ["a1", "a2", "a3"]
    assert store.last_seqs(["run-a", "run-b", "none"]) == {"run-a": 3, "run-b": 1}
    assert store.append([]) == [] and store.append([("run-c", [])]) == []


def test_lines_written_with_their_own_seqs_move_the_counter_past_them(store: LogStore) -> None:
    store.insert_lines([_row("run-a", seq) for seq in (1, 2, 7)])
    [(_, events)] = store.append([("run-a", _drafts("next"))])
    assert events[0]["seq"] == 8


def test_a_collision_with_a_stored_line_is_never_silent(
        store: LogStore, caplog: pytest.LogCaptureFixture) -> None:
    """A counter behind the lines (rows written without it: a tool, an older relaycast)."""
    store.append([("run-a", _drafts("a1", "a2"))])
    with store.engine.begin() as connection:  # behind the counter's back
        connection.execute(insert(LogLine).values(
            run_id="run-a", seq=3, ts=0, level="info", message="written elsewhere", data={},
            broadcast_state=PENDING))
    with caplog.at_level(logging.WARNING, logger="workflows.store"):
        [(_, events)] = store.append([("run-a", _drafts("a3", "a4"))])
    assert [e["seq"] for e in events] == [4, 5], "renumbered past the stored line, in order"
    assert [line.message for line in store.lines("run-a")] == [
        "a1", "a2", "written elsewhere", "a3", "a4"]
    assert store.renumbered == 2
    assert any("collided with stored lines" in r.getMessage() for r in caplog.records)


# Lines -----------------------------------------------------------------------------------------


def test_inserting_the_same_run_and_seq_twice_stores_it_once(store: LogStore) -> None:
    store.insert_lines([_row("run-a", seq) for seq in (1, 2, 3)])
    # A retried flush: seqs 2 and 3 again (with other text), and a new seq 4.
    store.insert_lines([_row("run-a", 2, "retried"), _row("run-a", 3, "retried"), _row("run-a", 4)])
    store.insert_lines([_row("run-a", 4)])
    lines = store.lines("run-a")
    assert [line.seq for line in lines] == [1, 2, 3, 4]
    assert [line.message for line in lines] == [
        "run-a line 1", "run-a line 2", "run-a line 3", "run-a line 4"], "the first write wins"
    assert {line.broadcast_state for line in lines} == {PENDING}
    assert {line.broadcaster for line in lines} == {None}


def test_the_same_seq_in_two_runs_is_two_lines(store: LogStore) -> None:
    store.insert_lines([_row("run-a", 1), _row("run-b", 1)])
    assert [line.message for line in store.lines("run-a")] == ["run-a line 1"]
    assert [line.message for line in store.lines("run-b")] == ["run-b line 1"]


def test_inserting_no_rows_is_a_no_op(store: LogStore) -> None:
    store.insert_lines([])
    assert store.broadcast_counts() == {}
    assert store.oldest_pending_ts() is None


def test_lines_after_a_seq_are_exactly_the_later_ones_in_order(store: LogStore) -> None:
    data = {"rows": 1200, "nested": {"list": [1, "two", None, 3.5], "ok": True}, "text": "héllo ✓"}
    store.insert_lines([_row("run-a", seq, level=level, data=data if seq == 4 else {})
                        for seq, level in ((5, "error"), (1, "debug"), (4, "warning"), (2, "info"),
                                           (3, "info"))])
    store.insert_lines([_row("run-b", seq) for seq in range(1, 10)])

    assert [line.seq for line in store.lines("run-a")] == [1, 2, 3, 4, 5]
    later = store.lines("run-a", after_seq=2)
    assert [line.seq for line in later] == [3, 4, 5]
    assert all(line.run_id == "run-a" for line in later)
    line4 = later[1]
    assert (line4.ts, line4.level, line4.message, line4.data) == (
        1_700_000_000_004, "warning", "run-a line 4", data)
    assert [line.seq for line in store.lines("run-a", after_seq=2, limit=2)] == [3, 4]
    assert store.lines("run-a", after_seq=5) == []
    assert store.lines("run-none") == []


def test_mark_sets_the_state_of_exactly_the_given_ranges(store: LogStore) -> None:
    store.insert_lines([_row("run-a", seq) for seq in range(1, 11)]
                       + [_row("run-b", seq) for seq in range(1, 6)])
    store.mark([("run-a", 2, 4), ("run-b", 5, 5)], SENT, "pusher")
    store.mark([("run-a", 9, 10)], FAILED)
    store.mark([], SENT, "ably")

    states = _states(store, "run-a")
    assert [seq for seq, state in states.items() if state == (SENT, "pusher")] == [2, 3, 4]
    assert [seq for seq, state in states.items() if state == (FAILED, None)] == [9, 10]
    assert [seq for seq, state in states.items() if state == (PENDING, None)] == [1, 5, 6, 7, 8]
    assert _states(store, "run-b") == {1: (PENDING, None), 2: (PENDING, None), 3: (PENDING, None),
                                       4: (PENDING, None), 5: (SENT, "pusher")}

    # Re-marking a range moves it (a retry delivered by the fallback).
    store.mark([("run-a", 9, 10)], SENT, "ably")
    assert _states(store, "run-a")[9] == (SENT, "ably")


def test_broadcast_counts_count_lines_per_state_and_broadcaster(store: LogStore) -> None:
    store.insert_lines([_row("run-a", seq) for seq in range(1, 11)]
                       + [_row("run-b", seq) for seq in range(1, 6)])
    store.mark([("run-a", 1, 4)], SENT, "pusher")
    store.mark([("run-a", 5, 6), ("run-b", 1, 1)], SENT, "ably")
    store.mark([("run-b", 2, 3)], FAILED)
    assert store.broadcast_counts() == {(SENT, "pusher"): 4, (SENT, "ably"): 3, (FAILED, None): 2,
                                        (PENDING, None): 6}
    assert store.broadcast_counts(["run-b"]) == {(SENT, "ably"): 1, (FAILED, None): 2,
                                                 (PENDING, None): 2}
    assert store.broadcast_counts(["run-none"]) == {}


def test_the_oldest_pending_ts_ignores_lines_already_sent(store: LogStore) -> None:
    store.insert_lines([_row("run-a", seq, ts=1000 * seq) for seq in range(1, 5)])
    assert store.oldest_pending_ts() == 1000
    store.mark([("run-a", 1, 2)], SENT, "pusher")
    assert store.oldest_pending_ts() == 3000
    store.mark([("run-a", 3, 4)], SENT, "pusher")
    assert store.oldest_pending_ts() is None


# Runs ------------------------------------------------------------------------------------------


def test_start_run_and_finish_run_record_a_runs_lifecycle(store: LogStore) -> None:
    assert store.run("etl-1") is None
    store.start_run("etl-1", "etl", {"source": "demo", "limit": 5})
    run = store.run("etl-1")
    assert run is not None
    assert (run.workflow, run.status, run.params, run.finished_at, run.error) == (
        "etl", "running", {"source": "demo", "limit": 5}, None, None)
    assert run.started_at > 1_600_000_000_000, "epoch milliseconds"

    ended = store.finish_run("etl-1", RunStatus.FAILED, "ValueError: bad row")
    assert ended is not None, "this call ended it"
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.error) == ("failed", "ValueError: bad row")
    assert run.finished_at is not None and run.finished_at >= run.started_at

    # Started again later under the same id: running, no end, no error, its new params.
    store.start_run("etl-1", "etl", {"other": True})
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.finished_at, run.error, run.params) == (
        "running", None, None, {"other": True})

    store.finish_run("etl-1", RunStatus.SUCCEEDED)
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.error) == ("succeeded", None)


def test_a_run_ends_once_whoever_tries(store: LogStore) -> None:
    store.start_run("fanout-1", "fanout", {})
    first = store.finish_run("fanout-1", RunStatus.FAILED, "shard 3 failed")
    assert first is not None and first.status == "failed"
    assert store.finish_run("fanout-1", RunStatus.FAILED, "shard 5 failed") is None
    assert store.finish_run("fanout-1", RunStatus.SUCCEEDED) is None, "a failed run stays failed"
    run = store.run("fanout-1")
    assert run is not None
    assert (run.status, run.error) == ("failed", "shard 3 failed")


def test_a_run_whose_start_never_reached_sql_is_recorded_as_ended(store: LogStore) -> None:
    ended = store.finish_run("lost-start", RunStatus.SUCCEEDED, at_ms=5000, workflow="etl")
    assert ended is not None
    assert (ended.status, ended.workflow, ended.started_at, ended.finished_at) == (
        "succeeded", "etl", 5000, 5000)
    assert store.finish_run("lost-start", RunStatus.FAILED) is None


def test_a_start_that_reaches_sql_after_the_end_does_not_undo_it(store: LogStore) -> None:
    store.finish_run("quick", RunStatus.FAILED, "boom", at_ms=2000, workflow="etl")
    store.start_run("quick", "etl", {"rows": 1}, at_ms=1000)  # the emitter's flush, late
    run = store.run("quick")
    assert run is not None
    assert (run.status, run.finished_at) == ("failed", 2000)
    store.start_run("quick", "etl", {"rows": 2}, at_ms=3000)  # a new run on the same id
    run = store.run("quick")
    assert run is not None
    assert (run.status, run.finished_at, run.params) == ("running", None, {"rows": 2})


def test_recent_runs_are_newest_first_limited_and_filtered_by_status(store: LogStore) -> None:
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RUNNING, RunStatus.SUCCEEDED]
    for i, status in enumerate(statuses):
        store.start_run(f"run-{i}", "etl", {}, at_ms=1_700_000_000_000 + i * 1000)
        if status is not RunStatus.RUNNING:
            store.finish_run(f"run-{i}", status, at_ms=1_700_000_000_500 + i * 1000)
    assert [r.run_id for r in store.recent_runs()] == ["run-3", "run-2", "run-1", "run-0"]
    assert [r.run_id for r in store.recent_runs(limit=2)] == ["run-3", "run-2"]
    assert [r.run_id for r in store.recent_runs(status=RunStatus.SUCCEEDED)] == ["run-3", "run-0"]
    assert [r.run_id for r in store.recent_runs(status=RunStatus.RUNNING)] == ["run-2"]


def test_line_counts_give_each_runs_lines_and_highest_seq(store: LogStore) -> None:
    store.insert_lines([_row("a", s) for s in (1, 2, 3, 5)] + [_row("b", 1)])
    assert store.line_counts(["a", "b", "none"]) == {"a": (4, 5), "b": (1, 1)}
    assert store.line_counts([]) == {}


# Migrations ------------------------------------------------------------------------------------


def test_a_fresh_database_is_upgraded_automatically_on_first_use(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        LogStore(engine, migrate=False)
        assert current_revision(engine) is None, "migrate=False leaves the schema alone"
        store = LogStore(engine)
        assert head_revision() is not None
        assert current_revision(engine) == head_revision()
        assert {"log_lines", "runs", "alembic_version"} <= set(inspect(engine).get_table_names())
        store.insert_lines([_row("run-a", 1)])
        # Opening it again (another process) leaves the data and the revision alone.
        again = LogStore(engine)
        assert [line.seq for line in again.lines("run-a")] == [1]
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_store_for_gives_one_store_per_process_and_url(sqlite_url: str, tmp_path: Any) -> None:
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    first = store_for(sqlite_url)
    try:
        assert store_for(sqlite_url) is first
        other = store_for(other_url)
        assert other is not first
        assert current_revision(other.engine) == head_revision()
    finally:
        first.engine.dispose()
        store_for(other_url).engine.dispose()


def test_processes_opening_a_fresh_database_at_once_all_get_the_schema(database_url: str) -> None:
    """Prefork workers open the store together on first use; each must find a whole schema
    and none may fail on a table another one has just created."""
    opener = ("import sys, time\n"
              "from workflows.store import LogStore\n"
              "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
              "LogStore.from_url(sys.argv[1]).close()\n")
    start_at = time.time() + 4.0
    processes = [subprocess.Popen([sys.executable, "-c", opener, database_url, str(start_at)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        if process.returncode != 0:
            failures.append(stderr.strip().splitlines()[-1])
    assert failures == []
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
