"""``RELAYCAST_LOG_FORMAT=json``: every line the worker, beat, ``relaycast api`` and the CLI
print is one JSON object, and the lines about a run carry its ``run_id`` (and the task's
``task_id``). Real processes: ``celery -A relaycast worker`` running a user's workflow module
that logs every way a task does, ``celery beat``, ``relaycast api``, ``relaycast run``."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.api import ApiServer
from support.emitting import wait_until
from support.runs import run_env, start_run
from support.workers import CeleryBeat, CeleryWorker, Started, relaycast_cli

from broadcasters.logcontext import bound
from tasks.logformat import JsonFormatter
from workflows.store import LogStore

JSON = {"RELAYCAST_LOG_FORMAT": "json"}
TOKEN = "json-logs-admin-token-0123456789"
FLOWS = "json_log_flows"
FLOWS_SOURCE = textwrap.dedent('''
    """A user's workflow logging every way a task does."""
    import logging
    import sys
    import warnings

    from celery.utils.log import get_task_logger

    from workflows.base import workflow

    acme = logging.getLogger("acme")
    task_log = get_task_logger(__name__)


    @workflow("json_probe")
    def probe(log, *, tag=""):
        log.info(f"stream {tag}")
        acme.warning("acme %s", tag)
        task_log.info(f"task logger {tag}")
        print(f"out {tag}\\nsecond line {tag}")
        print(f"err {tag}", file=sys.stderr)
        warnings.warn(f"careful {tag}")
        try:
            1 / 0
        except ZeroDivisionError:
            acme.exception(f"failed {tag}")
        return tag
''')


def _lines(text: str) -> list[str]:
    """Complete lines only (a process may be writing the last one right now)."""
    complete = text[:text.rfind("\n") + 1] if "\n" in text else ""
    return [line for line in complete.splitlines() if line.strip()]


def _records(text: str) -> list[dict[str, Any]]:
    """Every line as the JSON object it must be (failing on the first that is not)."""
    records = []
    for line in _lines(text):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message"} <= set(record), line
        assert record["ts"].endswith("Z") and record["level"] in (
            "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        records.append(record)
    return records


def test_the_worker_and_beat_print_only_json_and_a_runs_lines_carry_its_run_id(
        broker: str, sqlite_url: str, tmp_path: Path, workers: Started) -> None:
    (tmp_path / f"{FLOWS}.py").write_text(FLOWS_SOURCE)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = run_env(broker, sqlite_url, PYTHONPATH=path, RELAYCAST_WORKFLOWS=FLOWS,
                  RELAYCAST_HEALTH_INTERVAL_S="1", **JSON)
    worker = CeleryWorker(env, queues="broadcast,workflows", concurrency=2, name="json")
    beat = CeleryBeat(env)
    workers.start(worker, beat)
    run_id = f"json-{uuid.uuid4().hex[:8]}"
    start_run(env, "json_probe", run_id, tag="hello")

    store = LogStore.from_url(sqlite_url)
    try:
        def ended() -> bool:
            run = store.run(run_id)
            return run is not None and run.status != "running"

        assert wait_until(ended, timeout_s=120)
        assert store.run(run_id).status == "succeeded"  # type: ignore[union-attr]
    finally:
        store.close()

    def succeeded_logged() -> bool:
        return any(r.get("run_id") == run_id and "succeeded" in r["message"]
                   for r in _records(worker.log_tail(2_000_000)))

    assert wait_until(succeeded_logged, timeout_s=60)
    assert wait_until(lambda: sum("Sending due task" in r["message"]
                                  for r in _records(beat.log_tail(2_000_000))) >= 2, 60)
    # Every line of both, stdout and stderr alike (their log holds both streams).
    records = _records(worker.log_tail(2_000_000))
    beat_records = _records(beat.log_tail(2_000_000))

    assert not any("-------------- " in r["message"] for r in records), "no banner"
    assert any(r["message"].startswith("celery ") and "worker json@" in r["message"]
               for r in records), "one JSON line in the banner's place"
    assert any(r["message"].startswith("celery beat ") for r in beat_records)
    assert any(r["message"] == "beat: Starting..." for r in beat_records)

    (received,) = [r for r in records if r["message"].startswith("Task workflows.json_probe[")
                   and r["message"].endswith("] received")]
    task_id = received["task_id"]
    assert received["run_id"] == run_id, "the main process's line names the run too"
    about_the_run = [r for r in records if task_id in r["message"] or run_id in r["message"]
                     or r.get("task_id") == task_id]
    assert len(about_the_run) >= 8
    for record in about_the_run:
        assert record.get("run_id") == run_id, record
    by_message = {r["message"]: r for r in records if r.get("task_id") == task_id}
    assert by_message["acme hello"]["logger"] == "acme"
    assert by_message["task logger hello"]["task"] == "workflows.json_probe"
    assert by_message["out hello\nsecond line hello"]["logger"] == "celery.redirected", (
        "a print() is one record, its newline inside the JSON string")
    assert by_message["err hello"]["logger"] == "celery.redirected"
    failed = by_message["failed hello"]
    assert failed["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in failed["exception"]
    assert any("careful hello" in r["message"] and r["logger"] == "py.warnings"
               for r in by_message.values())
    assert any(m.startswith(f"Task workflows.json_probe[{task_id}] succeeded")
               for m in by_message)
    # The log broadcaster's lines say which broadcaster wrote them, and for which run.
    log_lines = [r for r in records if r["logger"] == "relaycast.broadcast"
                 and f"private-logs-{run_id}" in r["message"]]
    assert log_lines and all(r.get("broadcaster") == "log" and r.get("run_id") == run_id
                             for r in log_lines)


def test_relaycast_api_start_up_lines_are_json(sqlite_url: str, closing: list[Any]) -> None:
    for env in ({"DATABASE_URL": sqlite_url, **JSON},
                {"DATABASE_URL": sqlite_url, "RELAYCAST_ADMIN_TOKEN": TOKEN, **JSON}):
        api = ApiServer(env)
        closing.append(api)
        api.start()
        records = _records(api.log_tail(200_000))
        assert records, "it says where it listens or how to sign in"
        messages = " ".join(r["message"] for r in records)
        if "RELAYCAST_ADMIN_TOKEN" in env:
            assert f"/ui/?token={TOKEN}" in messages, "the sign-in link, as JSON on stdout"
        else:
            assert "listening on loopback only" in messages
        api.close()


def test_a_cli_command_logs_json_and_its_error_is_one_json_line(broker: str, sqlite_url: str
                                                                ) -> None:
    env = run_env(broker, sqlite_url, RELAYCAST_LOG_LEVEL="DEBUG", **JSON)
    run_id = f"cli-{uuid.uuid4().hex[:8]}"
    result = relaycast_cli("run", "etl", "--run-id", run_id, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"run id:  {run_id}", "the output is for people"
    records = _records(result.stderr)
    assert len(records) >= 3, "DEBUG: the libraries' lines, every one JSON"

    refused = relaycast_cli("disable", "pusher", env={**JSON})
    assert refused.returncode == 2
    (error,) = _records(refused.stderr)
    assert error["level"] == "ERROR"
    assert error["message"].startswith("relaycast: disable needs REDIS_URL")


def test_the_formatter_writes_one_object_per_record_with_what_it_knows() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("acme", logging.ERROR, __file__, 1, "two\nlines %s", ("é",),
                               exc_info)
    with bound(run_id="run-1", broadcaster="pusher"):
        line = formatter.format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert (data["logger"], data["level"], data["message"]) == ("acme", "ERROR", "two\nlines é")
    assert (data["run_id"], data["broadcaster"]) == ("run-1", "pusher")
    assert "task_id" not in data
    assert data["exception"].endswith("ValueError: bad\nvalue")

    named = logging.LogRecord("x", logging.INFO, __file__, 1, "%d%d", ("only one",), None)
    named.broadcaster = "ably"
    data = json.loads(formatter.format(named))
    assert data["broadcaster"] == "ably", "a record's own extra= wins"
    assert data["message"] == "%d%d ('only one',)", "arguments that do not fit are kept"
    assert "run_id" not in data
