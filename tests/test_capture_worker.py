"""Capture under a real ``celery worker`` (prefork and ``-P threads``) running a user's
workflow module: every record and printed line of a run stored once, in order, and never in
another run. The in-process tests of the handler are in ``test_capture.py``."""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from support.runs import run_env
from support.workers import CeleryWorker, Started

from workflows.models import LogLine
from workflows.store import LogStore


def _source(line: LogLine) -> str:
    return str(line.data.get("logger") or line.data.get("stream") or "")


# End to end: a real worker running a user's workflow module -----------------------------------------

FLOWS = "capture_flows"
FLOWS_SOURCE = textwrap.dedent('''
    """A user's workflows: logging every way a task does."""
    import logging
    import sys
    import threading

    from celery import current_task
    from celery.utils.log import get_task_logger

    from workflows.base import workflow

    acme = logging.getLogger("acme")
    acme.setLevel(logging.DEBUG)  # lets DEBUG through: the capture level must leave it out
    task_log = get_task_logger(__name__)
    vendor = logging.getLogger("vendorlib.client")  # a library's logger, as libraries set it up
    vendor.addHandler(logging.NullHandler())
    own = logging.getLogger("workflows.emitter")  # relaycast's own: never captured
    _barriers = {}
    _lock = threading.Lock()


    def _together(count):
        with _lock:
            barrier = _barriers.setdefault(count, threading.Barrier(count, timeout=120))
        barrier.wait()


    @workflow("capture_probe", autoretry_for=(ConnectionError,), max_retries=3,
              retry_kwargs={"countdown": 1})
    def probe(log, *, tag="", fail_first=True, together=0, rounds=1):
        attempt = current_task.request.retries
        if together:
            _together(together)
        for i in range(rounds):
            mark = f"{tag}:{attempt}:{i}"
            log.info(f"stream {mark}")
            acme.debug(f"acme debug {mark}")
            acme.info(f"acme {mark}")
            task_log.warning(f"task logger {mark}")
            vendor.error(f"vendor {mark}")
            print(f"out {mark}")
            print(f"err {mark}", file=sys.stderr)
            own.warning(f"own {mark}")
            try:
                1 / 0
            except ZeroDivisionError:
                acme.exception(f"acme failed {mark}")
        if fail_first and attempt == 0:
            raise ConnectionError(f"upstream reset {tag}")
        return tag
''')


def _expected(tag: str, attempt: int, *, logging_: bool = True, prints: bool = True,
              debug: bool = False, rounds: int = 1) -> list[tuple[str, str, str]]:
    lines = []
    for i in range(rounds):
        mark = f"{tag}:{attempt}:{i}"
        lines.append(("info", f"stream {mark}", ""))
        if logging_:
            if debug:
                lines.append(("debug", f"acme debug {mark}", "acme"))
            lines += [("info", f"acme {mark}", "acme"),
                      ("warning", f"task logger {mark}", FLOWS),
                      ("error", f"vendor {mark}", "vendorlib.client")]
        if prints:
            lines += [("info", f"out {mark}", "stdout"), ("error", f"err {mark}", "stderr")]
        if logging_:
            lines.append(("error", f"acme failed {mark}", "acme"))
    return lines


def _retry(tag: str) -> tuple[str, str, str]:
    return ("warning", f"retry 1/3 in 1 s: ConnectionError: upstream reset {tag}", "")


def _worker(broker: str, database_url: str, tmp_path: Path, workers: Started, *,
            pool: str = "prefork", concurrency: int = 2, **env: str) -> None:
    (tmp_path / f"{FLOWS}.py").write_text(FLOWS_SOURCE)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    worker_env = run_env(broker, database_url, PYTHONPATH=path, CELERY_WORKER_INCLUDE=FLOWS,
                         **env)
    workers.start(CeleryWorker(worker_env, queues="workflows", concurrency=concurrency,
                               pool=pool, name=f"capture-{pool}"))


def _start(broker: str, **runs: dict[str, Any]) -> None:
    """Enqueue ``capture_probe`` once per run id (the kwargs given), as ``relaycast run`` does."""
    app = Celery("capture-test", broker=broker)
    try:
        for run_id, params in runs.items():
            app.send_task("workflows.capture_probe", kwargs={"run_id": run_id, **params},
                          queue="workflows")
    finally:
        app.close()


def _finished_lines(store: LogStore, run_id: str, timeout_s: float = 90) -> list[LogLine]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = store.run(run_id)
        if run is not None and run.status != "running":
            assert run.status == "succeeded", run.error
            return store.lines(run_id)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {store.lines(run_id)}")


def test_a_workers_task_stores_its_logging_and_prints_once_in_order_with_the_retry_line(
        broker: str, sqlite_url: str, tmp_path: Path, workers: Started,
        open_store: Callable[[str], LogStore]) -> None:
    _worker(broker, sqlite_url, tmp_path, workers)
    run_id = f"cap-{uuid.uuid4().hex[:6]}"
    _start(broker, **{run_id: {"tag": "t"}})
    lines = _finished_lines(open_store(sqlite_url), run_id)
    assert [(line.level, line.message, _source(line)) for line in lines] == [
        *_expected("t", 0), _retry("t"), *_expected("t", 1)]
    retry = next(line for line in lines if line.message.startswith("retry "))
    assert (retry.data["attempt"], retry.data["max_retries"], retry.data["countdown_s"]) == (1, 3, 1)
    for line in lines:
        if line.message.startswith("acme failed"):
            assert "ZeroDivisionError: division by zero" in line.data["traceback"]


def test_capture_off_stores_only_the_log_streams_lines(
        broker: str, sqlite_url: str, tmp_path: Path, workers: Started,
        open_store: Callable[[str], LogStore]) -> None:
    _worker(broker, sqlite_url, tmp_path, workers, RELAYCAST_CAPTURE="off")
    run_id = f"off-{uuid.uuid4().hex[:6]}"
    _start(broker, **{run_id: {"tag": "o"}})
    lines = _finished_lines(open_store(sqlite_url), run_id)
    assert [(line.level, line.message, _source(line)) for line in lines] == [
        *_expected("o", 0, logging_=False, prints=False), _retry("o"),
        *_expected("o", 1, logging_=False, prints=False)]


def test_capture_logging_stores_records_down_to_its_level_but_not_prints(
        broker: str, sqlite_url: str, tmp_path: Path, workers: Started,
        open_store: Callable[[str], LogStore]) -> None:
    _worker(broker, sqlite_url, tmp_path, workers, RELAYCAST_CAPTURE="logging",
            RELAYCAST_CAPTURE_LEVEL="DEBUG")
    run_id = f"logging-{uuid.uuid4().hex[:6]}"
    _start(broker, **{run_id: {"tag": "l", "fail_first": False}})
    lines = _finished_lines(open_store(sqlite_url), run_id)
    assert [(line.level, line.message, _source(line)) for line in lines] == _expected(
        "l", 0, prints=False, debug=True)


def test_four_runs_at_once_in_one_threaded_worker_keep_to_their_own_runs(
        broker: str, sqlite_url: str, tmp_path: Path, workers: Started,
        open_store: Callable[[str], LogStore]) -> None:
    _worker(broker, sqlite_url, tmp_path, workers, pool="threads", concurrency=4)
    tags = [f"th{i}-{uuid.uuid4().hex[:4]}" for i in range(4)]
    # Each waits for all four to have started, then logs 25 rounds: they run at once.
    _start(broker, **{tag: {"tag": tag, "fail_first": False, "together": 4, "rounds": 25}
                      for tag in tags})
    store = open_store(sqlite_url)
    for tag in tags:
        lines = _finished_lines(store, tag)
        assert [(line.level, line.message, _source(line)) for line in lines] == _expected(
            tag, 0, rounds=25), f"run {tag} holds its own lines, each once, in order"
