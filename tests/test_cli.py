"""The command line: ``relaycast logs`` / ``db`` (SQLite and PostgreSQL), and the one-line
errors every command gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import inspect
from support.seeding import seed_lines

from relaycast.cli import main
from workflows.store import LogStore, current_revision, head_revision, make_engine

CLI_TIMEOUT_S = 60


def _row(run_id: str, seq: int, message: str | None = None, *, level: str = "info",
         data: dict[str, Any] | None = None, ts: int | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts if ts is not None else 1_700_000_000_000 + seq,
            "level": level, "message": message if message is not None else f"{run_id} line {seq}",
            "data": data if data is not None else {}}



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
    seed_lines(store, [
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
    seed_lines(store, [_row("etl-1", 1), _row("etl-1", 2)])
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
