"""workflows.store.runs on SQLite and PostgreSQL: a run's start and its end, exactly once."""

from __future__ import annotations

from workflows.models import RunStatus
from workflows.store import LogStore


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
