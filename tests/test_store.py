"""LogStore on SQLite and PostgreSQL, its migrations, and the ``relaycast logs`` / ``db`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import inspect

from relaycast.cli import main
from workflows.models import FAILED, PENDING, SENT
from workflows.store import LogStore, current_revision, head_revision, make_engine, store_for

CLI_TIMEOUT_S = 60


def _row(run_id: str, seq: int, message: str | None = None, *, level: str = "info",
         data: dict[str, Any] | None = None, ts: int | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts if ts is not None else 1_700_000_000_000 + seq,
            "level": level, "message": message if message is not None else f"{run_id} line {seq}",
            "data": data if data is not None else {}}


def _states(store: LogStore, run_id: str) -> dict[int, tuple[str, str | None]]:
    return {line.seq: (line.broadcast_state, line.broadcaster) for line in store.lines(run_id)}


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


def test_max_seqs_gives_each_runs_highest_seq_and_leaves_out_runs_without_lines(
        store: LogStore) -> None:
    store.insert_lines([_row("run-b", seq) for seq in (7, 2, 5)] + [_row("run-a", 1), _row("run-a", 3)])
    assert store.max_seqs(["run-a", "run-b", "run-none"]) == {"run-a": 3, "run-b": 7}
    assert store.max_seqs(iter(["run-b"])) == {"run-b": 7}
    assert store.max_seqs([]) == {}
    assert store.max_seqs(["run-none"]) == {}


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

    store.finish_run("etl-1", "failed", "ValueError: bad row")
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.error) == ("failed", "ValueError: bad row")
    assert run.finished_at is not None and run.finished_at >= run.started_at

    # A retried run starts again: running, no end, no error; the original record is kept.
    store.start_run("etl-1", "etl", {"other": True})
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.finished_at, run.error, run.params) == (
        "running", None, None, {"source": "demo", "limit": 5})

    store.finish_run("etl-1", "succeeded")
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.error) == ("succeeded", None)


def test_finishing_an_unknown_run_creates_nothing(store: LogStore) -> None:
    store.finish_run("never-started", "succeeded")
    assert store.run("never-started") is None


def test_recent_runs_are_newest_first_limited_and_filtered_by_status(store: LogStore) -> None:
    for i, status in enumerate(["succeeded", "failed", "running", "succeeded"]):
        store.start_run(f"run-{i}", "etl", {}, at_ms=1_700_000_000_000 + i * 1000)
        if status != "running":
            store.finish_run(f"run-{i}", status, at_ms=1_700_000_000_500 + i * 1000)
    assert [r.run_id for r in store.recent_runs()] == ["run-3", "run-2", "run-1", "run-0"]
    assert [r.run_id for r in store.recent_runs(limit=2)] == ["run-3", "run-2"]
    assert [r.run_id for r in store.recent_runs(status="succeeded")] == ["run-3", "run-0"]
    assert [r.run_id for r in store.recent_runs(status="running")] == ["run-2"]


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


# The command line -------------------------------------------------------------------------------


def _cli_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "RELAYCAST_LOG_LEVEL": "WARNING"}


def _run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relaycast", *args], env=_cli_env(database_url),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def _run_cli_concurrently(*commands: tuple[str, Sequence[str]]
                          ) -> list[subprocess.CompletedProcess[str]]:
    """Independent ``(database_url, args)`` commands, started together to keep the suite fast."""
    processes = [(list(args), subprocess.Popen([sys.executable, "-m", "relaycast", *args],
                                               env=_cli_env(url), stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True))
                 for url, args in commands]
    results = []
    for args, process in processes:
        try:
            out, err = process.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return results


def test_relaycast_db_current_and_upgrade_work_on_a_fresh_database(database_url: str) -> None:
    head = head_revision()
    before = _run_cli(database_url, "db", "current")
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == f"schema revision: none (latest: {head})"

    upgraded = _run_cli(database_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema revision: {head} (latest: {head})"

    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head
        assert {"log_lines", "runs"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_relaycast_logs_prints_a_runs_stored_lines(store: LogStore, database_url: str) -> None:
    store.insert_lines([
        _row("etl-1", 1, "extracting", level="debug", ts=1_700_000_000_123),
        _row("etl-1", 2, "extracted rows", data={"rows": 1200, "source": "démo"}),
        _row("etl-1", 3, "slow step", level="warning"),
        _row("etl-1", 4, "boom", level="error", data={"traceback": "Traceback ..."}),
        _row("other", 1, "not this run"),
    ])
    text_out, json_out, after_out = _run_cli_concurrently(
        (database_url, ["logs", "etl-1"]), (database_url, ["logs", "etl-1", "--json"]),
        (database_url, ["logs", "etl-1", "--json", "--after", "2"]))

    assert text_out.returncode == 0, text_out.stderr
    printed = text_out.stdout.splitlines()
    assert len(printed) == 4
    assert printed[0].split() == ["1", "22:13:20.123", "DEBUG", "extracting"]
    assert printed[1].split()[0] == "2" and "INFO" in printed[1] and "extracted rows" in printed[1]
    assert printed[1].endswith(json.dumps({"rows": 1200, "source": "démo"}, ensure_ascii=False))
    assert "WARNING" in printed[2] and printed[2].endswith("slow step")
    assert "ERROR" in printed[3] and "boom" in printed[3] and "Traceback ..." in printed[3]
    assert "not this run" not in text_out.stdout

    assert json_out.returncode == 0, json_out.stderr
    assert json.loads(json_out.stdout) == [
        {"seq": 1, "ts": 1_700_000_000_123, "level": "debug", "message": "extracting", "data": {}},
        {"seq": 2, "ts": 1_700_000_000_002, "level": "info", "message": "extracted rows",
         "data": {"rows": 1200, "source": "démo"}},
        {"seq": 3, "ts": 1_700_000_000_003, "level": "warning", "message": "slow step", "data": {}},
        {"seq": 4, "ts": 1_700_000_000_004, "level": "error", "message": "boom",
         "data": {"traceback": "Traceback ..."}},
    ]

    assert after_out.returncode == 0, after_out.stderr
    assert [line["seq"] for line in json.loads(after_out.stdout)] == [3, 4]


def test_relaycast_logs_exits_1_with_a_message_when_there_are_no_lines(
        sqlite_url: str, tmp_path: Any) -> None:
    store = LogStore.from_url(sqlite_url)
    store.insert_lines([_row("etl-1", 1), _row("etl-1", 2)])
    store.engine.dispose()
    never_used = f"sqlite:///{tmp_path / 'never-used.db'}"
    missing, after_last, fresh = _run_cli_concurrently(
        (sqlite_url, ["logs", "no-such-run"]), (sqlite_url, ["logs", "etl-1", "--after", "2"]),
        (never_used, ["logs", "etl-1"]))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip() == "no lines for run no-such-run"
    assert (after_last.returncode, after_last.stdout) == (1, "")
    assert after_last.stderr.strip() == "no lines for run etl-1 after seq 2"
    # A database never used before is upgraded on first use, then found empty.
    assert (fresh.returncode, fresh.stderr.strip()) == (1, "no lines for run etl-1")
    engine = make_engine(never_used)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_relaycast_logs_json_also_exits_1_with_a_message_when_there_are_no_lines(
        sqlite_url: str) -> None:
    result = _run_cli(sqlite_url, "logs", "no-such-run", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == [], "still valid JSON on stdout"
    assert result.stderr.strip() == "no lines for run no-such-run"


def test_relaycast_logs_rejects_a_non_numeric_after(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["logs", "etl-1", "--after", "ten"])
    assert exited.value.code == 2
    assert "--after" in capsys.readouterr().err
