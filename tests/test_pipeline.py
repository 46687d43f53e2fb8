"""The pipeline end to end: real Celery workers (subprocesses) on a real Redis broker,
soketi as Pusher, a WebSocket subscriber as the browser, SQLite and PostgreSQL as the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from support.fault_server import FaultServer
from support.pusher_ws import Subscriber
from support.runs import run_env, seqs_received, start_run, subscribe, wait_for_lines
from support.seeding import seed_lines
from support.servers import RedisServer, Soketi
from support.workers import CeleryBeat, CeleryWorker, ForwardingProxy, Started, relaycast_cli

from broadcasters.backends import RedisBackend
from broadcasters.state import SharedState
from workflows.models import LineState
from workflows.store import LogStore

REPO = Path(__file__).resolve().parents[1]
SubscriberFactory = Callable[..., Subscriber]


def test_concurrent_runs_reach_subscribers_and_sql_in_full(
    broker: str, database_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    env = run_env(broker, database_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher,log")
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    runs = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    subscriber = subscriber_factory()
    subscribe(subscriber, *(f"private-logs-{r}" for r in runs))
    for i, run_id in enumerate(runs):
        start_run(env, "burst", run_id, lines=1000, big_line_bytes=12_000 if i == 0 else 0)

    expected = {runs[0]: 1001, runs[1]: 1000, runs[2]: 1000}
    store = open_store(database_url)
    for run_id, count in expected.items():
        received = wait_for_lines(subscriber, f"private-logs-{run_id}", count)
        assert sorted(set(received)) == list(range(1, count + 1)), "every line, once after dedupe"
        for event in subscriber.events(f"private-logs-{run_id}", "log"):
            in_message = [line["seq"] for line in event["data"]["events"]]
            assert in_message == sorted(in_message), "lines of one message are in seq order"
        stored = store.lines(run_id)
        assert [line.seq for line in stored] == list(range(1, count + 1))
    big = [line for line in store.lines(runs[0]) if line.data.get("big")]
    assert len(big) == 1
    assert len(big[0].message.encode()) >= 12_000, "SQL keeps the big line in full"
    shown = [line for e in subscriber.events(f"private-logs-{runs[0]}", "log")
             for line in e["data"]["events"] if line["seq"] == big[0].seq]
    assert shown[0]["truncated"] is True, "the browser got it truncated with a marker"

    deadline = time.monotonic() + 30  # the last task marks SQL just after it delivered
    while store.broadcast_counts(runs) != {("sent", "pusher"): 3001} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.broadcast_counts(runs) == {("sent", "pusher"): 3001}

    redis_store = RedisBackend.from_url(broker, env["RELAYCAST_STATE_PREFIX"])
    counts = SharedState(redis_store).pipeline_counts()
    redis_store.client.close()
    assert counts["broadcast_lines"] == 3001
    assert 0 < counts["broadcast_tasks"] <= 3001 / 20, "one task per flush, not per line"


def test_over_quota_with_two_workers_calls_the_provider_at_most_twice(
    broker: str, database_url: str, fault_server: FaultServer, workers: Started,
    open_store: Callable[[str], LogStore],
) -> None:
    fault_server.respond(403, "Over quota")
    env = run_env(broker, database_url, PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s",
               **fault_server.env(), RELAYCAST_BROADCASTERS="pusher,log")
    for name in ("wa", "wb"):
        worker = CeleryWorker(env, concurrency=1, name=name)
        workers.start(worker)
    runs = [f"quota-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    for run_id in runs:
        start_run(env, "burst", run_id, lines=300, delay_ms=2)
    store = open_store(database_url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if store.broadcast_counts(runs).get(("logged", "log"), 0) >= 600:
            break
        time.sleep(0.2)
    assert store.broadcast_counts(runs) == {("logged", "log"): 600}, (
        "every line went to the next one, and stays owed to a live broadcaster (not sent)")
    assert 1 <= fault_server.count("/apps/1/batch_events") <= 2


def test_a_failing_workflow_keeps_its_lines_and_emits_failed(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    env = run_env(broker, sqlite_url, **soketi.env())
    worker = CeleryWorker(env, concurrency=1)
    workers.start(worker)
    run_id = f"failing-{uuid.uuid4().hex[:6]}"
    subscriber = subscriber_factory()
    subscribe(subscriber, "private-admin-events", f"private-logs-{run_id}")
    start_run(env, "failing", run_id, fail_at=3, steps=5)
    (failed,) = subscriber.wait_for_events("private-admin-events", "failed", timeout_s=60)
    assert failed["data"]["run_id"] == run_id
    assert "upstream API returned garbage at step 3" in failed["data"]["error"]
    started = subscriber.events("private-admin-events", "started")
    assert [e["data"]["run_id"] for e in started] == [run_id]
    received = wait_for_lines(subscriber, f"private-logs-{run_id}", 4)
    store = open_store(sqlite_url)
    lines = store.lines(run_id)
    assert [line.message for line in lines[:3]] == ["step 1/5", "step 2/5", "step 3/5"]
    assert lines[3].level == "error"
    assert "Traceback" in lines[3].data["traceback"]
    assert sorted(received) == [1, 2, 3, 4]
    run = store.run(run_id)
    assert run is not None
    assert run.status == "failed"
    assert run.finished_at is not None
    assert failed["data"]["duration_s"] == round((run.finished_at - run.started_at) / 1000, 3), (
        "the event's duration is the run's, as stored")


def test_redis_stopped_for_5s_the_workflow_goes_on_storing_and_no_line_is_lost(
    sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    with RedisServer(persistent=True) as own_redis:
        # The gate's default bound: a batch whose predecessor vanished in the outage goes on
        # after it, as in production (the tests' hang-guard bound would only slow this down).
        env = run_env(own_redis.url, sqlite_url, **soketi.env(),
                   RELAYCAST_VISIBILITY_TIMEOUT_S="10", RELAYCAST_RETRY_BACKOFF_MAX_S="5",
                   RELAYCAST_SWEEP_INTERVAL_S="1", RELAYCAST_SWEEP_AFTER_S="5",
                   RELAYCAST_ORDER_WAIT_MS="2000")
        worker = CeleryWorker(env, concurrency=2)
        beat = CeleryBeat(env)  # the sweeper re-sends what the outage swallowed
        workers.start(worker, beat)
        run_id = f"outage-{uuid.uuid4().hex[:6]}"
        subscriber = subscriber_factory()
        subscribe(subscriber, f"private-logs-{run_id}")
        lines, delay_ms = 300, 30  # about 9 s of work
        start_run(env, "burst", run_id, lines=lines, delay_ms=delay_ms)
        subscriber.wait_for(lambda _: len(seqs_received(subscriber, f"private-logs-{run_id}")) > 20,
                            timeout_s=30)
        store = open_store(sqlite_url)
        own_redis.stop()
        stored_at_stop = len(store.lines(run_id))
        time.sleep(5)
        stored_in_outage = len(store.lines(run_id)) - stored_at_stop
        own_redis.start()
        # Not blocked by the outage: it went on logging and storing while Redis was down
        # (a count, not a clock: a workflow waiting for the broker stores nothing meanwhile).
        assert stored_in_outage > 0, "the workflow waited for Redis"
        deadline = time.monotonic() + 60
        channel = f"private-logs-{run_id}"
        while len(set(seqs_received(subscriber, channel))) < lines and time.monotonic() < deadline:
            if not worker.is_running():  # what a supervisor (compose's restart policy) does
                worker.start_again()
            time.sleep(0.5)
        try:
            received = wait_for_lines(subscriber, channel, lines, timeout_s=5)
        except AssertionError:
            got = set(seqs_received(subscriber, f"private-logs-{run_id}"))
            missing = sorted(set(range(1, lines + 1)) - got)
            rows = {line.seq: (line.broadcast_state, line.swept_at)
                    for line in open_store(sqlite_url).lines(run_id) if line.seq in missing}
            raise AssertionError(f"missing {missing[:20]}... ({len(missing)}); in SQL: "
                                 f"{list(rows.items())[:10]} ({len(rows)} rows)\n--- beat ---\n"
                                 f"{beat.log_tail(3000)}\n--- worker ---\n"
                                 f"{worker.log_tail(6000)}\nworker alive: {worker.is_running()}") from None
        assert sorted(set(received)) == list(range(1, lines + 1))
        run = open_store(sqlite_url).run(run_id)
        assert run is not None
        assert run.status == "succeeded"
        assert run.finished_at is not None


@pytest.mark.timeout(400)
def test_a_broadcast_worker_killed_mid_stream_loses_no_line(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    proxy = ForwardingProxy(soketi.url, delay_s=0.3)
    try:
        # The gate's default bound: the killed worker's batches come back only when they
        # are redelivered, and their successors go on after it, as in production.
        env = run_env(broker, sqlite_url, **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                   RELAYCAST_FLUSH_MAX_LINES="100", RELAYCAST_VISIBILITY_TIMEOUT_S="5",
                   RELAYCAST_RETRY_BACKOFF_MAX_S="2", RELAYCAST_ORDER_WAIT_MS="2000")
        producer = CeleryWorker(env, queues="workflows", concurrency=1, name="producer")
        consumer = CeleryWorker(env, queues="broadcast", concurrency=1, name="consumer")
        workers.start(producer, consumer)
        run_id = f"crash-{uuid.uuid4().hex[:6]}"
        subscriber = subscriber_factory()
        subscribe(subscriber, f"private-logs-{run_id}")
        # The run emits for about 9 s (3 ms a line), so the kill below, at its first line
        # delivered, lands mid-stream however slow the machine (arranged, not hoped for).
        start_run(env, "burst", run_id, lines=3000, delay_ms=3)
        channel = f"private-logs-{run_id}"
        subscriber.wait_for(lambda _: len(seqs_received(subscriber, channel)) > 0, timeout_s=60)
        consumer.kill()  # SIGKILL while a slow batch is in flight and more are queued
        partial = len(set(seqs_received(subscriber, channel)))
        assert partial < 3000, "the kill happened mid-stream"
        consumer.start_again()
        received = wait_for_lines(subscriber, channel, 3000, timeout_s=240)  # a hang guard
        assert sorted(set(received)) == list(range(1, 3001))
    finally:
        proxy.close()


def test_relaycast_demo_runs_with_no_servers(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    result = relaycast_cli("demo", env=env, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "succeeded" in out
    emitted = int(out.split("lines emitted")[1].split()[0])
    stored = int(out.split("lines stored")[1].split()[0])
    assert emitted == stored > 10
    assert f"log={stored}" in out
    assert (tmp_path / "data" / "relaycast" / "relaycast.db").exists()


def test_relaycast_run_without_a_broker_says_what_is_missing() -> None:
    result = relaycast_cli("run", "etl", env={})
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_over_quota_every_worker_fails_over_to_ably_and_announces_it(
    broker: str, sqlite_url: str, fault_server: FaultServer, workers: Started,
    open_store: Callable[[str], LogStore],
) -> None:
    from support.ably_server import AblyServer

    with AblyServer(key="app.key:ablysecret") as ably:
        env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s",
                   **fault_server.env(), ABLY_API_KEY="app.key:ablysecret", **ably.env(),
                   RELAYCAST_BROADCASTERS="pusher,ably")
        for name in ("wa", "wb"):
            worker = CeleryWorker(env, concurrency=1, name=name)
            workers.start(worker)
        store = open_store(sqlite_url)
        before = f"before-{uuid.uuid4().hex[:6]}"
        start_run(env, "burst", before, lines=50)
        deadline = time.monotonic() + 60
        while store.broadcast_counts([before]).get(("sent", "pusher"), 0) < 50:
            assert time.monotonic() < deadline, store.broadcast_counts([before])
            time.sleep(0.2)
        fault_server.clear()
        fault_server.respond(403, "Over quota")
        runs = [f"fail-over-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
        for run_id in runs:
            start_run(env, "burst", run_id, lines=400, delay_ms=2)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if store.broadcast_counts(runs).get(("sent", "ably"), 0) >= 800:
                break
            time.sleep(0.2)
        assert store.broadcast_counts(runs) == {("sent", "ably"): 800}
        assert 1 <= fault_server.count("/apps/1/batch_events") <= 2
        for run_id in runs:
            carried = [m for m in ably.messages if m.channel == f"private-logs-{run_id}"]
            seqs = sorted({e["seq"] for m in carried for e in m.decoded()["events"]})
            assert seqs == list(range(1, 401))
            assert all(m.id and m.id.startswith(f"{run_id}:") for m in carried)
        changes = [m.decoded() for m in ably.messages if m.name == "provider-changed"]
        assert len(changes) == 1, "announced once, whatever the number of workers"
        assert (changes[0]["from"], changes[0]["to"]) == ("pusher", "ably")
        assert changes[0]["reason"].startswith("quota exceeded")
        started = [m for m in ably.messages if m.channel == "private-admin-events"
                   and m.name == "started"]
        assert len(started) == 2, "admin events follow the active provider"


def test_the_sweeper_rebroadcasts_lines_left_pending_once(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    """Lines in SQL whose broadcast task vanished (say, with a broker that lost it)."""
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_SWEEP_INTERVAL_S="0.5",
               RELAYCAST_SWEEP_AFTER_S="1")
    store = open_store(sqlite_url)
    run_id = f"orphan-{uuid.uuid4().hex[:6]}"
    old_ms = int((time.time() - 10) * 1000)
    seed_lines(store, [{"run_id": run_id, "seq": i, "ts": old_ms + i, "level": "info",
                        "message": f"orphan {i}", "data": {}} for i in range(1, 31)])
    fresh = f"fresh-{uuid.uuid4().hex[:6]}"
    seed_lines(store, [{"run_id": fresh, "seq": 1, "ts": int(time.time() * 1000) + 600_000,
                        "level": "info", "message": "still in flight", "data": {}}])
    subscriber = subscriber_factory()
    subscribe(subscriber, f"private-logs-{run_id}", f"private-logs-{fresh}")
    worker = CeleryWorker(env, queues="broadcast", concurrency=1)
    beat = CeleryBeat(env)
    workers.start(worker, beat)
    received = wait_for_lines(subscriber, f"private-logs-{run_id}", 30, timeout_s=30)
    assert sorted(received) == list(range(1, 31)), "every orphan line, once"
    deadline = time.monotonic() + 30
    while store.broadcast_counts([run_id]) != {("sent", "pusher"): 30}:
        assert time.monotonic() < deadline, store.broadcast_counts([run_id])
        time.sleep(0.2)
    time.sleep(2)  # four more sweeps
    assert sorted(seqs_received(subscriber, f"private-logs-{run_id}")) == list(range(1, 31)), (
        "delivered lines are not swept again")
    assert subscriber.events(f"private-logs-{fresh}", "log") == [], "young lines are left alone"


def test_the_sweeper_sends_a_runs_pending_lines_around_a_hole_without_touching_the_hole(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    """Pending lines 1-10 and 21-30 around lines 11-20 that already have an outcome (here:
    failed, for ``relaycast replay``): the sweep sends the two ranges as two messages and
    records each range's outcome, leaving 11-20 as they were."""
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_SWEEP_INTERVAL_S="0.5",
                  RELAYCAST_SWEEP_AFTER_S="1")
    store = open_store(sqlite_url)
    run_id = f"holes-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    old_ms = int((time.time() - 10) * 1000)
    seed_lines(store, [{"run_id": run_id, "seq": i, "ts": old_ms + i, "level": "info",
                        "message": f"line {i}", "data": {}} for i in range(1, 31)])
    store.mark([(run_id, 11, 20)], LineState.FAILED)
    subscriber = subscriber_factory()
    subscribe(subscriber, channel)
    workers.start(CeleryWorker(env, queues="broadcast", concurrency=1), CeleryBeat(env))
    expected = [*range(1, 11), *range(21, 31)]
    wait_for_lines(subscriber, channel, 20, timeout_s=30)
    deadline = time.monotonic() + 30
    while store.broadcast_counts([run_id]).get(("sent", "pusher"), 0) < 20:
        assert time.monotonic() < deadline, store.broadcast_counts([run_id])
        time.sleep(0.2)
    assert sorted(seqs_received(subscriber, channel)) == expected
    ids = {event["data"]["events"][0]["seq"]: event for event in subscriber.events(channel, "log")}
    assert sorted(ids) == [1, 21], "one message per range: none spans the hole"
    assert store.broadcast_counts([run_id]) == {("sent", "pusher"): 20, ("failed", None): 10}, (
        "the lines in the hole keep their own outcome")
