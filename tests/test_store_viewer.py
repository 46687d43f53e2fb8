"""workflows.store.viewer on SQLite and PostgreSQL: the runs list's queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from workflows.models import LogLine, RunStatus
from workflows.store import LogStore


def _drafts(count: int) -> list[dict[str, Any]]:
    return [{"ts": 1_700_000_000_000 + i, "level": "info", "message": f"line {i}", "data": {}}
            for i in range(count)]


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


def test_a_workflow_name_holding_nul_matches_no_run_rather_than_failing(store: LogStore) -> None:
    """``GET /runs?workflow=a%00b`` answered 500 on PostgreSQL (found by schemathesis)."""
    store.start_run("run-1", "etl", {})
    assert [r.run_id for r in store.recent_runs(workflow="etl")] == ["run-1"]
    assert store.recent_runs(workflow="etl\x00") == []
    assert store.recent_runs(workflow="\x00") == []


def test_line_counts_give_each_runs_lines_and_highest_seq(store: LogStore) -> None:
    store.append([("a", _drafts(5)), ("b", _drafts(1))])
    with store.engine.begin() as connection:  # a hole: line 4 deleted
        connection.execute(delete(LogLine).where(LogLine.run_id == "a", LogLine.seq == 4))
    assert store.line_counts(["a", "b", "none"]) == {"a": (4, 5), "b": (1, 1)}
    assert store.line_counts([]) == {}
