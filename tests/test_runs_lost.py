"""Runs whose worker died end ``lost`` (issue 19, item 1); quiet runs of live workers do not.

Unit tests of the decision (:mod:`tasks.lost`) with an injected clock, of the store's
conditional UPDATE and of the per-process heartbeat writer; then real ``celery worker`` and
``celery beat`` subprocesses on a private Redis, SQLite, soketi with a subscriber of
``private-admin-events``, and Chromium for the viewer.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.pusher_ws import Subscriber
from support.runs import run_env, start_run, subscribe
from support.servers import Soketi
from support.viewer import Stack, Viewer
from support.workers import CeleryBeat, CeleryWorker, Started, relaycast_cli

from broadcasters.backends import MemoryBackend
from config import ConfigError, load_settings
from tasks.lost import LOST_REASON, Stale, check_interval_s, mark_lost_runs, stale_runs
from workflows.heartbeat import Heartbeat, beat_interval_s, heartbeat_key, read_heartbeats
from workflows.models import Run, RunStatus
from workflows.store import LogStore

SubscriberFactory = Callable[..., Subscriber]
BOUND_S = 4.0
ADMIN = "private-admin-events"
T0 = 1_700_000_000.0  # the injected clock's "now", epoch seconds


# The decision, with an injected clock ----------------------------------------------------


def test_a_stale_heartbeat_is_lost_and_a_fresh_one_is_not() -> None:
    started = int((T0 - 3600) * 1000)  # both started an hour ago
    running = [("stale", started), ("fresh", started)]
    beats = {"stale": T0 - BOUND_S - 0.1, "fresh": T0 - BOUND_S + 0.1}
    assert stale_runs(running, beats, T0, BOUND_S) == [
        Stale("stale", started, T0 - BOUND_S - 0.1, heartbeat=True)]


def test_a_run_without_any_heartbeat_is_judged_from_its_start() -> None:
    old, new = int((T0 - BOUND_S - 1) * 1000), int((T0 - 1) * 1000)
    lost = stale_runs([("old", old), ("new", new)], {}, T0, BOUND_S)
    assert [(s.run_id, s.heartbeat) for s in lost] == [("old", False)]
    # A run started again (redelivered) after its last heartbeat: its new start counts.
    assert stale_runs([("again", new)], {"again": T0 - 3600}, T0, BOUND_S) == []


def test_intervals_follow_the_bound() -> None:
    assert (check_interval_s(120), beat_interval_s(120)) == (30.0, 5.0)
    assert (check_interval_s(4), beat_interval_s(4)) == (1.0, 1.0)


def test_the_bound_defaults_to_120_s_and_is_validated() -> None:
    assert load_settings().run_lost_after_s == 120.0
    assert load_settings(RELAYCAST_RUN_LOST_AFTER_S="4").run_lost_after_s == 4.0
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ConfigError, match="RELAYCAST_RUN_LOST_AFTER_S"):
            load_settings(RELAYCAST_RUN_LOST_AFTER_S=bad)


def _announcer() -> tuple[list[tuple[str, str]], Callable[[Run, Stale, float], None]]:
    said: list[tuple[str, str]] = []
    return said, lambda run, stale, bound: said.append((run.run_id, run.status))


def test_mark_lost_runs_marks_stale_runs_once_and_a_real_end_after_it_wins(
        store: LogStore) -> None:
    backend = MemoryBackend(clock=lambda: T0)
    started_ms = int((T0 - 600) * 1000)
    for run_id in ("dead", "quiet", "never-beat"):
        store.start_run(run_id, "etl", {}, at_ms=started_ms)
    backend.set(heartbeat_key("dead"), repr(T0 - 2 * BOUND_S), 60)
    backend.set(heartbeat_key("quiet"), repr(T0 - 1), 60)
    said, announce = _announcer()

    lost = mark_lost_runs(store, backend, announce, T0, BOUND_S)
    assert sorted(lost) == ["dead", "never-beat"]
    assert sorted(said) == [("dead", "lost"), ("never-beat", "lost")]
    run = store.run("dead")
    assert run is not None
    assert (run.status, run.error, run.finished_at) == ("lost", LOST_REASON, int(T0 * 1000))
    assert store.run("quiet").status == "running"  # type: ignore[union-attr]

    # A second beat (or two at once) finds nothing more to announce.
    assert mark_lost_runs(store, backend, announce, T0 + 1, BOUND_S) == []
    assert len(said) == 2
    # The task was alive after all: its real end replaces lost, and is announced (once).
    ended = store.finish_run("dead", RunStatus.SUCCEEDED, at_ms=int(T0 * 1000) + 5)
    assert ended is not None and ended.status == "succeeded"
    assert store.finish_run("dead", RunStatus.FAILED) is None


def test_a_run_started_again_since_it_was_read_is_not_marked(store: LogStore) -> None:
    store.start_run("again", "etl", {}, at_ms=1000)
    store.start_run("again", "etl", {}, at_ms=2000)  # a redelivered first task, meanwhile
    assert store.mark_lost("again", 1000, LOST_REASON) is None
    assert store.run("again").status == "running"  # type: ignore[union-attr]


def test_a_redelivered_first_task_puts_a_lost_run_back_to_running(store: LogStore) -> None:
    store.start_run("back", "etl", {}, at_ms=1000)
    assert store.mark_lost("back", 1000, LOST_REASON, at_ms=5000) is not None
    store.start_run("back", "etl", {}, at_ms=9000)  # its `started`, announced again
    run = store.run("back")
    assert run is not None
    assert (run.status, run.finished_at, run.error) == ("running", None, None)


def test_the_heartbeat_writer_beats_while_a_task_runs_and_once_after() -> None:
    now = [T0]
    backend = MemoryBackend(clock=lambda: now[0])
    beat = Heartbeat(connect=lambda: (backend, 1.0), clock=lambda: now[0])
    beat.enter("r1")
    beat.enter("r1")  # two tasks of one run in this process (a threads pool)

    def seen(run_id: str) -> float | None:
        return read_heartbeats(backend, [run_id]).get(run_id)

    _wait(lambda: seen("r1") == T0, "first heartbeat")
    now[0] = T0 + 10
    _wait(lambda: seen("r1") == T0 + 10, "refreshed while running")
    beat.leave("r1")
    assert beat.running() == ["r1"], "still one task of it here"
    beat.leave("r1")
    assert beat.running() == []
    now[0] = T0 + 20
    _wait(lambda: seen("r1") == T0 + 20, "one last heartbeat when its last task ends")
    now[0] = T0 + 21  # within the key's TTL (four bounds)
    time.sleep(3 * beat_interval_s(1.0))
    assert seen("r1") == T0 + 20, "no heartbeat once nothing of the run executes here"


def test_without_redis_no_heartbeat_thread_writes_and_nothing_raises() -> None:
    beat = Heartbeat(connect=lambda: None)
    beat.enter("r2")
    beat.leave("r2")
    assert beat.beats == 0 and beat.errors == 0


# Real workers, beat, soketi ------------------------------------------------------------------


def _wait(condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.05)


def _status(store: LogStore, run_id: str) -> str | None:
    run = store.run(run_id)
    return run.status if run is not None else None


def _admin(subscriber: Subscriber, run_id: str, event: str) -> list[dict[str, Any]]:
    return [e["data"] for e in subscriber.events(ADMIN, event)
            if isinstance(e["data"], dict) and e["data"].get("run_id") == run_id]


def _checks_run(worker: CeleryWorker) -> int:
    """How many ``relaycast.runs_lost`` checks the worker has completed."""
    return len(re.findall(r"Task relaycast\.runs_lost\[[^\]]+\] succeeded", worker.log_tail(10**7)))


@pytest.mark.timeout(300)
def test_a_run_whose_worker_is_sigkilled_ends_lost_once_everywhere(
    make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi,
    subscriber_factory: SubscriberFactory, workers: Started,
) -> None:
    # The gate's default bound: lines the killed process stored but never enqueued leave a
    # hole that only the sweeper fills; what comes after them goes on after the bound.
    stack = make_stack(soketi, worker=False, RELAYCAST_RUN_LOST_AFTER_S=str(BOUND_S),
                       RELAYCAST_ORDER_WAIT_MS="2000")
    doomed = CeleryWorker(stack.env, queues="workflows", concurrency=1, name="doomed")
    broadcaster = CeleryWorker(stack.env, queues="broadcast", concurrency=1, name="bc")
    workers.start(doomed, broadcaster, CeleryBeat(stack.env))
    subscriber = subscriber_factory()
    subscribe(subscriber, ADMIN)
    store = stack.store()
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    stack.start_run("etl", run_id, rows=100_000, batch_size=20, delay_ms=20)
    _wait(lambda: len(store.lines(run_id)) >= 50, "the run under way", timeout_s=90)

    doomed.kill()  # the whole process group, as a crash or the OOM killer would
    stored = len(store.lines(run_id))
    _wait(lambda: _status(store, run_id) == "lost", "the run marked lost", timeout_s=120)
    subscriber.wait_for(lambda _: bool(_admin(subscriber, run_id, "lost")), timeout_s=60)
    # Later checks (two beats, say) announce nothing more.
    checks = _checks_run(broadcaster)
    _wait(lambda: _checks_run(broadcaster) >= checks + 3, "three more checks", timeout_s=60)
    lost = _admin(subscriber, run_id, "lost")
    assert len(lost) == 1, lost
    assert lost[0]["reason"] == "worker lost" and lost[0]["workflow"] == "etl"
    assert _admin(subscriber, run_id, "finished") == _admin(subscriber, run_id, "failed") == []
    run = store.run(run_id)
    assert run is not None and run.error == "worker lost" and run.finished_at is not None
    last = store.lines(run_id)[-1]
    assert last.level == "error" and last.message.startswith("run lost:"), last.message
    assert len(store.lines(run_id)) == stored + 1, "every stored line kept, one line added"
    assert lost[0]["last_seq"] == last.seq, "announced after the run's last line"

    listed = relaycast_cli("runs", "--status", "lost", "--json", env=stack.env)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    follow = relaycast_cli("logs", run_id, "--follow", env=stack.env)
    assert follow.returncode == 1, "logs --follow exits 1 on a lost run"

    view = viewer(stack.api)
    view.open_run(view.first, run_id)
    view.first.wait_for_selector("#run-status[data-status='lost']", timeout=120_000)
    assert view.first.inner_text("#run-status") == "lost"
    view.first.goto(f"{stack.api.url}/ui/")
    view.first.select_option("#status-filter", "lost")
    view.first.wait_for_selector(f"tr[data-status='lost']:has-text('{run_id}')", timeout=120_000)
    view.check_clean()


QUIET_MODULE = """
import time

from relaycast import LogStream, workflow


@workflow("quiet")
def quiet(log: LogStream, *, sleep_s: float = 20.0) -> dict:
    log.info("going quiet", sleep_s=sleep_s)
    time.sleep(sleep_s)  # not a line, not a print: only the heartbeat says it lives
    log.info("awake")
    return {"slept_s": sleep_s}


@workflow("sturdy", acks_late=True, reject_on_worker_lost=True)
def sturdy(log: LogStream, *, sleep_s: float = 8.0) -> dict:
    log.info("working", sleep_s=sleep_s)
    time.sleep(sleep_s)
    log.info("done")
    return {"slept_s": sleep_s}
"""


@pytest.mark.timeout(300)
def test_a_quiet_step_under_a_live_worker_is_never_lost(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path,
) -> None:
    """Quiet for five times a short bound (4 s): beat checks it often, and never marks it."""
    _quiet_step_is_never_lost(broker, sqlite_url, soketi, subscriber_factory, workers,
                              open_store, tmp_path, bound_s=BOUND_S, sleep_s=5 * BOUND_S,
                              checks=5)


@pytest.mark.long_wait
@pytest.mark.timeout(900)
def test_a_five_minute_quiet_step_with_the_default_bound_is_never_lost(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path,
) -> None:
    """The issue's case as deployed: the default bound (120 s), a step that sleeps 5 minutes
    without a line or a print, beat checking every 30 s: still running until it ends."""
    _quiet_step_is_never_lost(broker, sqlite_url, soketi, subscriber_factory, workers,
                              open_store, tmp_path, bound_s=None, sleep_s=300.0, checks=8)


def _quiet_step_is_never_lost(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path, *,
    bound_s: float | None, sleep_s: float, checks: int,
) -> None:
    (tmp_path / "quiet_jobs.py").write_text(textwrap.dedent(QUIET_MODULE))
    bound = {} if bound_s is None else {"RELAYCAST_RUN_LOST_AFTER_S": str(bound_s)}
    env = run_env(broker, sqlite_url, **soketi.env(), **bound,
                  RELAYCAST_WORKFLOWS="quiet_jobs", PYTHONPATH=str(tmp_path))
    broadcaster = CeleryWorker(env, queues="broadcast", concurrency=1, name="bc")
    workers.start(CeleryWorker(env, queues="workflows", concurrency=1, name="wf"), broadcaster,
                  CeleryBeat(env))
    subscriber = subscriber_factory()
    subscribe(subscriber, ADMIN)
    store = open_store(sqlite_url)
    run_id = f"quiet-{uuid.uuid4().hex[:6]}"
    start_run(env, "quiet", run_id, sleep_s=sleep_s)
    _wait(lambda: len(store.lines(run_id)) >= 1, "the run under way", timeout_s=90)
    before = _checks_run(broadcaster)
    while (status := _status(store, run_id)) == "running":  # never "lost" on the way
        time.sleep(0.1)
    assert status == "succeeded", f"ended {status}"
    assert _checks_run(broadcaster) - before >= checks, "beat checked it while it was quiet"
    subscriber.wait_for(lambda _: bool(_admin(subscriber, run_id, "finished")), timeout_s=60)
    assert len(_admin(subscriber, run_id, "finished")) == 1
    assert _admin(subscriber, run_id, "lost") == []
    assert [line.message for line in store.lines(run_id)] == ["going quiet", "awake"]


@pytest.mark.timeout(300)
def test_a_redelivered_acks_late_workflow_brings_its_lost_run_back_and_ends_it(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path,
) -> None:
    (tmp_path / "quiet_jobs.py").write_text(textwrap.dedent(QUIET_MODULE))
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_RUN_LOST_AFTER_S=str(BOUND_S),
                  RELAYCAST_VISIBILITY_TIMEOUT_S="10", RELAYCAST_RETRY_BACKOFF_MAX_S="2",
                  RELAYCAST_WORKFLOWS="quiet_jobs", RELAYCAST_ORDER_WAIT_MS="2000",
                  PYTHONPATH=str(tmp_path))
    doomed = CeleryWorker(env, queues="workflows", concurrency=1, name="wf")
    workers.start(doomed, CeleryWorker(env, queues="broadcast", concurrency=1, name="bc"),
                  CeleryBeat(env))
    subscriber = subscriber_factory()
    subscribe(subscriber, ADMIN)
    store = open_store(sqlite_url)
    run_id = f"sturdy-{uuid.uuid4().hex[:6]}"
    start_run(env, "sturdy", run_id, sleep_s=8.0)
    _wait(lambda: len(store.lines(run_id)) >= 1, "the run under way", timeout_s=90)
    doomed.kill()  # its message stays unacknowledged: Redis hands it out again
    _wait(lambda: _status(store, run_id) == "lost", "the run marked lost", timeout_s=120)
    doomed.start_again()
    _wait(lambda: _status(store, run_id) == "succeeded", "the redelivered task ends the run",
          timeout_s=180)
    subscriber.wait_for(lambda _: bool(_admin(subscriber, run_id, "finished")), timeout_s=60)
    assert len(_admin(subscriber, run_id, "lost")) == 1
    assert len(_admin(subscriber, run_id, "started")) == 2, "announced again: running again"
    assert len(_admin(subscriber, run_id, "finished")) == 1
    messages = [line.message for line in store.lines(run_id)]
    assert any(m.startswith("run lost:") for m in messages)
    assert any("redelivered" in m for m in messages), messages
    assert messages[-1] == "done"
