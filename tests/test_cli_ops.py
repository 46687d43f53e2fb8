"""Watching runs from a terminal: ``relaycast logs RUN --follow`` against real workflows on a
real worker (SQLite and PostgreSQL), ``--level``, Ctrl-C, and ``relaycast runs``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from support.runs import run_env, start_run
from support.seeding import seed_lines
from support.workers import CeleryWorker, Started, one_line_error, project_env, relaycast_cli

from workflows.models import RunStatus
from workflows.store import LogStore


class Follower:
    """``relaycast logs RUN --follow ...`` in the background, its output in files."""

    def __init__(self, tmp_path: Path, env: dict[str, str], run_id: str, *extra: str) -> None:
        name = uuid.uuid4().hex[:6]
        self.out_path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        self._out: IO[str] = self.out_path.open("w")
        self._err: IO[str] = self.err_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relaycast", "logs", run_id, "--follow", *extra],
            env=project_env(env), stdout=self._out, stderr=self._err, text=True)
        self.exited_at: float | None = None

    def wait_until_waiting(self, timeout_s: float = 30) -> None:
        """Until it says it waits for the run (it has read SQL once and found nothing)."""
        deadline = time.monotonic() + timeout_s
        while "waiting for run" not in self.err_path.read_text():
            assert self.process.poll() is None, self.err_path.read_text()
            assert time.monotonic() < deadline, "the follower never said it was waiting"
            time.sleep(0.05)

    def poll(self) -> bool:
        if self.exited_at is None and self.process.poll() is not None:
            self.exited_at = time.time()
        return self.exited_at is not None

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._out.close()
        self._err.close()


def _wait_all(followers: list[Follower], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(f.poll() for f in followers):
        assert time.monotonic() < deadline, [f.stderr for f in followers]
        time.sleep(0.02)


@pytest.mark.timeout(180)
def test_logs_follow_started_before_a_run_prints_every_line_once_and_exits_with_its_end(
    broker: str, database_url: str, workers: Started,
    open_store: Callable[[str], LogStore], tmp_path: Path,
) -> None:
    env = run_env(broker, database_url, RELAYCAST_BROADCASTERS="log")
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    store = open_store(database_url)  # the schema exists before the followers read it
    ok, bad = f"ok-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    followers = [Follower(tmp_path, env, ok), Follower(tmp_path, env, bad),
                 Follower(tmp_path, env, bad, "--level", "error", "--json")]
    try:
        for follower in followers:
            follower.wait_until_waiting()
        start_run(env, "burst", ok, lines=600, delay_ms=2)
        start_run(env, "failing", bad, fail_at=3, steps=5, delay_ms=200)
        _wait_all(followers, timeout_s=120)

        runs = {run_id: store.run(run_id) for run_id in (ok, bad)}
        assert {r: (run.status if run else None) for r, run in runs.items()} == {
            ok: RunStatus.SUCCEEDED, bad: RunStatus.FAILED}
        assert [f.process.returncode for f in followers] == [0, 1, 1]
        # Each exited by itself (the run's end), with the run's outcome as its status; how
        # soon after the end is a figure for a benchmark, not a bound for a test.
        for follower, run_id in zip(followers, (ok, bad, bad), strict=True):
            finished_at = runs[run_id].finished_at  # type: ignore[union-attr]
            assert finished_at is not None
            print(f"{run_id}: exited {(follower.exited_at or 0) - finished_at / 1000:.2f}s "
                  "after the run ended")

        stored = store.lines(ok)
        assert len(stored) == 600
        printed = followers[0].stdout.splitlines()
        assert [int(text.split()[0]) for text in printed] == list(range(1, 601)), \
            "every line once, in order"
        assert [text.split(None, 3)[3] for text in printed] == [
            f"{line.message}  {json.dumps(line.data)}" for line in stored]

        failed_lines = followers[1].stdout.splitlines()
        assert [text.split()[0] for text in failed_lines] == ["1", "2", "3", "4"]
        assert "ERROR" in failed_lines[3] and "upstream API returned garbage" in failed_lines[3]
        [error] = [json.loads(text) for text in followers[2].stdout.splitlines()]
        assert (error["seq"], error["level"]) == (4, "error")
        assert all("Traceback" not in f.stderr for f in followers)
    finally:
        for follower in followers:
            follower.close()


def test_logs_follow_stops_on_ctrl_c_without_a_traceback(sqlite_url: str, tmp_path: Path) -> None:
    follower = Follower(tmp_path, {"DATABASE_URL": sqlite_url}, "never-started")
    try:
        follower.wait_until_waiting()
        follower.process.send_signal(signal.SIGINT)
        assert follower.process.wait(10) == 130
        assert follower.stdout == ""
        assert "Traceback" not in follower.stderr
        assert follower.stderr.strip().splitlines() == [
            "relaycast: waiting for run never-started to start (Ctrl-C to stop)"]
    finally:
        follower.close()


def test_logs_follow_of_a_run_that_has_ended_prints_it_and_exits_at_once(
        sqlite_url: str, sqlite_store: LogStore) -> None:
    seed_lines(sqlite_store, [{"run_id": "done", "seq": s, "ts": 1_700_000_000_000 + s,
                               "level": "info", "message": f"m{s}", "data": {}}
                              for s in range(1, 8)])
    sqlite_store.start_run("done", "etl", {}, at_ms=1_700_000_000_000)
    sqlite_store.finish_run("done", RunStatus.SUCCEEDED, at_ms=1_700_000_000_100)
    result = relaycast_cli("logs", "done", "-f", "--after", "5", env={"DATABASE_URL": sqlite_url},
                           timeout_s=30)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["6", "7"]
    assert result.stderr == ""


def test_logs_level_keeps_lines_at_or_above_it(sqlite_url: str, sqlite_store: LogStore) -> None:
    levels = ["debug", "info", "warning", "error", "critical", "info"]
    seed_lines(sqlite_store, [{"run_id": "mixed", "seq": s, "ts": 1_700_000_000_000,
                               "level": level, "message": level, "data": {}}
                              for s, level in enumerate(levels, start=1)])
    env = {"DATABASE_URL": sqlite_url}
    warning = relaycast_cli("logs", "mixed", "--level", "WARNING", env=env)
    assert warning.returncode == 0, warning.stderr
    assert [line.split()[0] for line in warning.stdout.splitlines()] == ["3", "4", "5"]
    as_json = relaycast_cli("logs", "mixed", "--level", "error", "--json", env=env)
    assert [line["seq"] for line in json.loads(as_json.stdout)] == [4, 5]
    none = relaycast_cli("logs", "mixed", "--level", "critical", "--after", "5", env=env)
    assert (none.returncode, none.stderr.strip()) == (
        1, "no lines for run mixed after seq 5 at level critical or above")


@pytest.mark.parametrize(("argv", "says"), [
    (["logs", "etl-1", "--level", "loud"], "unknown level 'loud'"),
    (["logs", "bad id!", "--follow"], "invalid run id 'bad id!'"),
    (["runs", "--status", "vanished"], "invalid choice: 'vanished'"),
    (["runs", "--limit", "0"], "0 runs is out of range"),
])
def test_watching_commands_refuse_bad_input_in_one_line(argv: list[str], says: str,
                                                        sqlite_url: str) -> None:
    result = relaycast_cli(*argv, env={"DATABASE_URL": sqlite_url})
    assert result.returncode == 2
    assert says in one_line_error(result)


def test_relaycast_runs_lists_recent_runs_newest_first(store: LogStore, database_url: str) -> None:
    base = 1_764_000_000_000  # 2025-11-24 16:00:00 UTC
    store.start_run("etl-1", "etl", {}, at_ms=base)
    store.finish_run("etl-1", RunStatus.SUCCEEDED, at_ms=base + 12_345)
    store.start_run("agent-2", "agent", {}, at_ms=base + 60_000)
    store.finish_run("agent-2", RunStatus.FAILED, "boom", at_ms=base + 60_000 + 185_000)
    store.start_run("etl-3", "etl", {}, at_ms=base + 120_000)  # still running
    seed_lines(store, [{"run_id": "etl-1", "seq": s, "ts": base, "level": "info",
                        "message": "x", "data": {}} for s in range(1, 1235)])
    env = {"DATABASE_URL": database_url}

    table = relaycast_cli("runs", env=env)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == ["WORKFLOW", "RUN", "ID", "STATUS", "STARTED", "(UTC)", "DURATION", "LINES"]
    assert [row[:3] for row in rows[1:]] == [["etl", "etl-3", "running"],
                                             ["agent", "agent-2", "failed"],
                                             ["etl", "etl-1", "succeeded"]]
    assert rows[2][3:] == ["2025-11-24", "16:01:00", "3m05s", "0"]
    assert rows[3][3:] == ["2025-11-24", "16:00:00", "12.3s", "1,234"]

    failed = relaycast_cli("runs", "--status", "failed", "--json", env=env)
    assert json.loads(failed.stdout) == [{
        "run_id": "agent-2", "workflow": "agent", "status": "failed", "started_at": base + 60_000,
        "finished_at": base + 245_000, "duration_s": 185.0, "lines": 0, "error": "boom"}]
    limited = relaycast_cli("runs", "--limit", "1", "--json", env=env)
    assert [run["run_id"] for run in json.loads(limited.stdout)] == ["etl-3"]
    succeeded = relaycast_cli("runs", "--status", "succeeded", env=env)
    assert [line.split()[1] for line in succeeded.stdout.splitlines()[1:]] == ["etl-1"]


def test_relaycast_runs_says_when_there_are_none(sqlite_url: str) -> None:
    result = relaycast_cli("runs", "--status", "failed", env={"DATABASE_URL": sqlite_url})
    assert (result.returncode, result.stdout) == (0, "no runs with status failed\n")
    as_json = relaycast_cli("runs", "--json", env={"DATABASE_URL": sqlite_url})
    assert json.loads(as_json.stdout) == []
