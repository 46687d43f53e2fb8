"""The broadcast task: a retry carries exactly the lines it was given; transient failures
are retried with backoff, then dead-lettered; final errors at once; a quota error falls back."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import Retry
from support.ably_server import AblyServer
from support.fault_server import FaultServer

from broadcasters.backoff import compute_backoff
from broadcasters.base import Message
from broadcasters.packing import pack_events
from broadcasters.state import FlagCause
from broadcasters.wire import Batch, new_batch
from workflows.models import LineState
from workflows.store import LogStore


def test_a_retry_of_lines_with_holes_never_packs_across_a_hole() -> None:
    from tasks.broadcast import batch_of, line_ranges

    events: list[dict[str, Any]] = [
        {"seq": s, "ts": 0, "level": "info", "message": f"m{s}", "data": {}} for s in (1, 2, 3, 7, 8)]
    messages: list[Message] = [*pack_events("private-logs-a", "a", events[:3], 10_000),
                               *pack_events("private-logs-a", "a", events[3:], 10_000)]
    retry = batch_of(messages, live_only=False)
    assert [[e["seq"] for e in run["events"]] for run in retry["runs"]] == [[1, 2, 3], [7, 8]]
    repacked = [m for run in retry["runs"]
                for m in pack_events(run["channel"], run["run_id"], run["events"], 10_000)]
    assert [m.id for m in repacked] == ["a:1-3", "a:7-8"]
    assert line_ranges(repacked) == [("a", 1, 3), ("a", 7, 8)], "SQL marks only lines carried"


# The task itself: retries, dead letters, fallback --------------------------------------------
#
# Each test runs the real task in this process (``Task.apply``, one attempt at a time: with
# ``throw=True`` a retry comes back as Celery's ``Retry``, carrying its countdown and the next
# attempt's arguments), through the real manager and the real ``pusher`` SDK pointed at the
# fault server, on each shared-state backend (in memory, and the private redis-server).

MAX_RETRIES = 3
BACKOFF_MAX_S = 3.0
RUN_ID = "etl-1"
ABLY_KEY = "appid.keyid:SECRETPART"


@pytest.fixture(autouse=True)
def _random_state_kept() -> Iterator[None]:
    """A test may seed the global generator (the backoff's jitter); others get it back as it was."""
    saved = random.getstate()
    yield
    random.setstate(saved)


@pytest.fixture(params=["memory", "redis"])
def worker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
           fault_server: FaultServer, sqlite_url: str) -> Iterator[LogStore]:
    """This process as a broadcast worker whose Pusher is the fault server; yields its store.

    ``RELAYCAST_BROADCAST_MAX_RETRIES`` is 3 and the backoff is capped at 3 s."""
    from tasks import runtime

    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": "app-secret",
           **fault_server.env(), "RELAYCAST_BROADCASTERS": "pusher", "DATABASE_URL": sqlite_url,
           "RELAYCAST_BROADCAST_MAX_RETRIES": str(MAX_RETRIES),
           "RELAYCAST_RETRY_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
           "RELAYCAST_STATE_PREFIX": f"test-{uuid.uuid4().hex[:8]}:"}
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("broker")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    try:
        yield runtime.store()
    finally:
        runtime.reset()


def _stored_batch(store: LogStore, count: int = 3) -> Batch:
    """``count`` lines of RUN_ID stored in SQL (pending), and the batch the emitter enqueues."""
    [(run_id, events)] = store.append([(RUN_ID, [
        {"ts": 0, "level": "info", "message": f"line {i}", "data": {}} for i in range(count)])])
    return new_batch([{"run_id": run_id, "channel": f"private-logs-{run_id}", "events": events}])


def _attempt(batch: Batch, retries: int) -> dict[str, Any] | Retry:
    """One run of the task, as attempt number ``retries``: its summary, or the retry it asks for."""
    from tasks.broadcast import broadcast

    try:
        summary: dict[str, Any] = broadcast.apply(args=[batch], retries=retries, throw=True).get()
    except Retry as retry:
        return retry
    return summary


def _seqs(batch: Batch) -> list[int]:
    return [event["seq"] for run in batch["runs"] for event in run["events"]]


def test_a_transient_failure_is_retried_with_backoff_then_dead_lettered_and_counted(
        worker: LogStore, fault_server: FaultServer) -> None:
    from tasks import runtime

    fault_server.respond(503, "upstream unavailable")  # for every request
    batch = _stored_batch(worker)
    # compute_backoff's jitter draws from the global generator, and nothing else in an
    # attempt does: seeded, each attempt's countdown is known exactly.
    random.seed(2024)
    jitter = random.Random(2024)
    for attempt in range(MAX_RETRIES):
        retry = _attempt(batch, attempt)
        assert isinstance(retry, Retry), f"attempt {attempt} asks for a retry"
        assert retry.when == compute_backoff(attempt, max_s=BACKOFF_MAX_S, rand=jitter.random)
        assert retry.sig is not None
        batch = retry.sig.args[0]
        assert _seqs(batch) == [1, 2, 3], "the retry carries the lines not delivered"
        assert worker.broadcast_counts([RUN_ID]) == {(LineState.PENDING, None): 3}, "not yet failed"

    summary = _attempt(batch, MAX_RETRIES)
    assert isinstance(summary, dict), "no retry past RELAYCAST_BROADCAST_MAX_RETRIES"
    assert (summary["attempt"], summary["dead_lettered"]) == (MAX_RETRIES, 1)
    assert fault_server.count("/apps/1/") == MAX_RETRIES + 1, "one request per attempt"
    assert worker.broadcast_counts([RUN_ID]) == {(LineState.FAILED, None): 3}
    state = runtime.state()
    counters = state.pipeline_counts()
    assert (counters.get("dead_lettered"), counters.get("broadcast_tasks")) == (1, MAX_RETRIES + 1)
    assert state.counts("pusher").failed == {"transient": MAX_RETRIES + 1}


def test_a_rate_limit_is_retried_no_sooner_than_its_retry_after(
        worker: LogStore, fault_server: FaultServer) -> None:
    from tasks import runtime

    fault_server.respond(429, "slow down", headers={"Retry-After": "2"}, times=1)
    retry = _attempt(_stored_batch(worker), 0)
    assert isinstance(retry, Retry)
    assert retry.when == 2.0, "the provider's Retry-After, longer than the first backoff"
    flag = runtime.state().flags(["pusher"]).get("pusher")
    assert flag is not None and flag.until is not None, "paused for every worker meanwhile"


@pytest.mark.parametrize(("status", "category"), [(400, "bad_request"), (413, "too_large")])
def test_a_final_error_is_dead_lettered_at_once_without_a_retry(
        worker: LogStore, fault_server: FaultServer, status: int, category: str) -> None:
    from tasks import runtime

    fault_server.respond(status, "refused")
    summary = _attempt(_stored_batch(worker), 0)
    assert isinstance(summary, dict), "no retry: sending it again cannot succeed"
    assert (summary["failed"], summary["pending"]) == (1, 0)
    assert fault_server.count("/apps/1/") == 1
    assert worker.broadcast_counts([RUN_ID]) == {(LineState.FAILED, None): 3}
    state = runtime.state()
    assert state.counts("pusher").failed == {category: 1}
    assert state.flags(["pusher"]) == {}, "the broadcaster stays on: the message was at fault"


@pytest.fixture
def ably_server(worker: LogStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[AblyServer]:
    """The worker with Ably after Pusher, on a local server speaking Ably's REST API."""
    from tasks import runtime

    with AblyServer(key=ABLY_KEY) as server:
        for name, value in {"ABLY_API_KEY": ABLY_KEY, **server.env(),
                            "RELAYCAST_BROADCASTERS": "pusher,ably"}.items():
            monkeypatch.setenv(name, value)
        runtime.reset()  # the worker's objects, built again from these settings
        yield server


def test_a_quota_error_moves_the_lines_to_the_next_broadcaster_and_flags_the_first(
        worker: LogStore, ably_server: AblyServer, fault_server: FaultServer) -> None:
    from tasks import runtime

    fault_server.respond(403, "Over quota")
    summary = _attempt(_stored_batch(worker), 0)
    assert isinstance(summary, dict), "delivered by Ably: nothing to retry"
    assert (summary["delivered"], summary["pending"]) == ({"ably": 1}, 0)
    assert worker.broadcast_counts([RUN_ID]) == {(LineState.SENT, "ably"): 3}
    sent = [m for m in ably_server.messages if m.channel == f"private-logs-{RUN_ID}"]
    assert [e["seq"] for m in sent for e in m.decoded()["events"]] == [1, 2, 3]
    flag = runtime.state().flags(["pusher"]).get("pusher")
    assert flag is not None and flag.cause is FlagCause.QUOTA and flag.until is not None

    # The next batch (any worker's) skips Pusher until its quota resets.
    summary = _attempt(_stored_batch(worker, 2), 0)
    assert isinstance(summary, dict)
    assert summary["delivered"] == {"ably": 1}
    assert fault_server.count("/apps/1/") == 1, "Pusher was not asked again"
    assert runtime.state().counts("pusher").skipped == 1
