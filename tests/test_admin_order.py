"""A run's admin events in order with its lines (issue 19): ``started`` before the run's first
line, ``finished`` after its last, whatever broadcast process publishes which batch.

Real ``celery worker`` subprocesses (the workflows on one, the broadcast queue on another at
``-c 2``: two processes publishing at once), Redis or RabbitMQ as the broker (Redis always as
the shared state, where the ordering gate lives), soketi as Pusher, and ONE WebSocket
subscriber of the admin channel and every run's channel: its single recorded stream is the
order a browser would see.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import require
from support.emitting import Recorder
from support.pusher_ws import Subscriber
from support.runs import run_env, subscribe
from support.servers import Soketi
from support.workers import CeleryWorker, ForwardingProxy, Started, run_python, with_examples

from broadcasters.wire import Channels, LineEvent, new_batch, place_run_starts
from workflows.outbox import Outbox

SubscriberFactory = Callable[..., Subscriber]

RUNS = 30
LINES = 1000
ADMIN = "private-admin-events"
ENDS = ("finished", "failed")


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def rabbitmq_broker() -> Iterator[str]:
    """A vhost of its own on the machine's RabbitMQ (127.0.0.1:5672, guest), deleted after."""
    require(shutil.which("rabbitmqctl") is not None, "rabbitmqctl (RabbitMQ) on PATH")
    vhost = f"relaycast-test-{uuid.uuid4().hex[:8]}"
    created = _rabbitmqctl("add_vhost", vhost)
    require(created.returncode == 0, f"a running RabbitMQ ({created.stderr.strip()[:200]})")
    try:
        allowed = _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        assert allowed.returncode == 0, allowed.stderr
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_env(request: pytest.FixtureRequest, broker: str) -> dict[str, str]:
    """``REDIS_URL`` (the private Redis: shared state, and the broker unless RabbitMQ is)."""
    if request.param == "rabbitmq":
        return {"REDIS_URL": broker,
                "CELERY_BROKER_URL": request.getfixturevalue("rabbitmq_broker")}
    return {"REDIS_URL": broker}


_START_RUNS = """
import json, sys
from tasks.celery_app import app
from workflows.base import REGISTRY
import workflows.examples  # noqa: F401
with app.connection_for_write() as connection:
    for run_id in json.loads(sys.argv[1]):
        REGISTRY["burst"].apply_async(kwargs={"run_id": run_id, "lines": int(sys.argv[2])},
                                      connection=connection)
"""


def _start_runs(env: dict[str, str], run_ids: list[str], lines: int) -> None:
    """Enqueue every run at once (one producer, as ``relaycast run`` does for one)."""
    result = run_python("-c", _START_RUNS, json.dumps(run_ids), str(lines),
                        env=with_examples(env))
    assert result.returncode == 0, result.stderr


def _run_of(event: dict[str, Any]) -> str | None:
    data = event["data"]
    return data.get("run_id") if isinstance(data, dict) else None


def _positions(stream: list[dict[str, Any]], run_id: str) -> dict[str, list[int]]:
    """Where, in the subscriber's stream, each of the run's lifecycle events and lines arrived."""
    channel = f"private-logs-{run_id}"
    at: dict[str, list[int]] = {"lines": [], "started": [], "end": []}
    for index, event in enumerate(stream):
        if event["channel"] == channel and event["event"] == "log":
            at["lines"].append(index)
        elif event["channel"] == ADMIN and _run_of(event) == run_id:
            if event["event"] == "started":
                at["started"].append(index)
            elif event["event"] in ENDS:
                at["end"].append(index)
    return at


def _end_of(stream: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    [data] = [e["data"] for e in stream
              if e["channel"] == ADMIN and e["event"] in ENDS and _run_of(e) == run_id]
    return dict(data)


def _all_arrived(run_ids: list[str]) -> Callable[[list[dict[str, Any]]], bool]:
    def arrived(stream: list[dict[str, Any]]) -> bool:
        seqs: dict[str, set[int]] = {r: set() for r in run_ids}
        ended: set[str] = set()
        for event in stream:
            channel = event["channel"] or ""
            if event["event"] == "log" and channel.startswith("private-logs-"):
                run_id = channel.removeprefix("private-logs-")
                if run_id in seqs:
                    seqs[run_id].update(line["seq"] for line in event["data"]["events"])
            elif channel == ADMIN and event["event"] in ENDS:
                ended.add(_run_of(event) or "")
        return all(len(s) >= LINES for s in seqs.values()) and ended >= set(run_ids)
    return arrived


@pytest.mark.timeout(600)
def test_every_runs_started_precedes_its_lines_and_its_end_follows_them_with_two_publishers(
    broker_env: dict[str, str], sqlite_url: str, soketi: Soketi,
    subscriber_factory: SubscriberFactory, workers: Started, request: pytest.FixtureRequest,
) -> None:
    # Requests reach soketi after a random 0-40 ms, so two batches published at once by the
    # two processes could arrive in either order: only the gate keeps a run in order.
    proxy = ForwardingProxy(soketi.url, jitter_s=0.04)
    request.addfinalizer(proxy.close)
    env = {**run_env(broker_env["REDIS_URL"], sqlite_url,
                     **{**soketi.env(), "PUSHER_PORT": str(proxy.port)}), **broker_env}
    producer = CeleryWorker(env, queues="workflows", concurrency=4, name="producer")
    publishers = CeleryWorker(env, queues="broadcast", concurrency=2, name="publishers")
    workers.start(producer, publishers)
    run_ids = [f"order-{i}-{uuid.uuid4().hex[:6]}" for i in range(RUNS)]
    subscriber = subscriber_factory()
    subscribe(subscriber, ADMIN, *(f"private-logs-{r}" for r in run_ids))
    _start_runs(env, run_ids, LINES)
    stream = subscriber.wait_for(_all_arrived(run_ids), timeout_s=400)

    problems = []
    for run_id in run_ids:
        at = _positions(stream, run_id)
        assert len(at["started"]) == 1 and len(at["end"]) == 1, (run_id, at["started"], at["end"])
        if at["started"][0] > at["lines"][0]:
            problems.append(f"{run_id}: started after its first line")
        if at["end"][0] < at["lines"][-1]:
            problems.append(f"{run_id}: its end before its last line")
        if at["end"][0] < at["started"][0]:
            problems.append(f"{run_id}: finished before started")
        assert _end_of(stream, run_id)["last_seq"] == LINES, "the end says the run's last line"
    assert problems == [], f"{len(problems)} problem(s) in {RUNS} runs:\n" + "\n".join(problems)


# The emitter's side: a batch says which runs' first lines follow a started it sent ----------


def _line(seq: int) -> LineEvent:
    return {"seq": seq, "ts": 0, "level": "info", "message": f"line {seq}", "data": {}}


def _stored(run_id: str, first: int, last: int) -> tuple[str, list[LineEvent]]:
    return run_id, [_line(s) for s in range(first, last + 1)]


def _outbox() -> tuple[Outbox, Recorder]:
    recorder = Recorder()
    return Outbox(recorder, Channels(), max_batch_lines=10, max_waiting_lines=1000), recorder


def test_a_started_goes_in_the_first_batch_of_a_send_and_its_runs_line_1_waits_for_it() -> None:
    outbox, recorder = _outbox()
    outbox.add(1, [_stored("plain", 1, 8), _stored("etl-1", 1, 8)],
               [(1, "started", {"type": "started", "ts": 0, "run_id": "etl-1"}),
                (2, "deploy", {"type": "deploy", "ts": 0})])
    outbox.send()
    first, second = recorder.batches
    assert [m["event"] for m in first["admin"]] == ["started"], (
        "the start rides with the first batch, not with the last lines")
    assert [m["event"] for m in second["admin"]] == ["deploy"]
    line_1 = next(b for b in recorder.batches for r in b["runs"]
                  if r["run_id"] == "etl-1" and r["events"][0]["seq"] == 1)
    assert line_1.get("after_start") == ["etl-1"], "plain (no started) is not listed"
    assert all("after_start" not in b for b in recorder.batches if b is not line_1)


def test_a_run_whose_started_went_in_an_earlier_send_is_listed_with_its_line_1_once() -> None:
    outbox, recorder = _outbox()
    outbox.add(1, [], [(1, "started", {"type": "started", "ts": 0, "run_id": "etl-1"})])
    outbox.send()
    outbox.add(2, [_stored("etl-1", 1, 3)], [])
    outbox.send()
    outbox.add(3, [_stored("etl-1", 4, 6)], [])
    outbox.send()
    assert [b.get("after_start") for b in recorder.batches] == [None, ["etl-1"], None]


def test_an_outbox_remembers_a_bounded_number_of_starts() -> None:
    pending: dict[str, None] = {}
    for i in range(5):
        place_run_starts([new_batch(admin=[{"channel": ADMIN, "event": "started",
                                             "data": {"run_id": f"r{i}"}, "id": f"a{i}"}])],
                         pending, max_pending=3)
    assert list(pending) == ["r2", "r3", "r4"], "the oldest forgotten"
