"""Health and operations: the periodic report under celery beat, `relaycast status`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection
from support.clock import FakeClock
from support.pusher_ws import Subscriber
from support.servers import Soketi
from support.workers import CeleryBeat, CeleryWorker, ForwardingProxy, relaycast_cli

from broadcasters.base import Message
from broadcasters.factory import build_manager
from broadcasters.state import LATENCY_BUCKETS_MS
from broadcasters.wire import BROADCAST_QUEUE
from config import load_settings

SubscriberFactory = Callable[..., Subscriber]


@pytest.fixture
def proxy(soketi: Soketi) -> Iterator[ForwardingProxy]:
    server = ForwardingProxy(soketi.url)
    yield server
    server.close()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for process in started:
        process.close()


def test_beat_publishes_a_health_report_whose_counts_match_what_happened(
    broker: str, sqlite_url: str, soketi: Soketi, proxy: ForwardingProxy,
    subscriber_factory: SubscriberFactory, processes: list[Any],
) -> None:
    env = {"REDIS_URL": broker, "DATABASE_URL": sqlite_url,
           **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
           "RELAYCAST_BROADCASTERS": "pusher,log", "RELAYCAST_HEALTH_INTERVAL_S": "1",
           "RELAYCAST_QUOTA_DISABLE": "1s", "RELAYCAST_FLAG_CACHE_MS": "0",
           "RELAYCAST_STATE_PREFIX": f"h{uuid.uuid4().hex[:6]}:"}
    clock = FakeClock(time.time())  # counters land in this hour's buckets, as beat reads them
    manager = build_manager(load_settings(**env), clock=clock)
    proxy.fail_next(403, "Over quota")
    first = manager.send([Message.from_data("private-admin-events", "x", {"n": 0}, "m0")])
    assert [name for _, name in first.logged] == ["log"]
    clock.advance(1.5)  # the quota flag (RELAYCAST_QUOTA_DISABLE=1s) lifts
    known = 5
    for n in range(1, known + 1):
        report = manager.send([Message.from_data("private-admin-events", "x", {"n": n}, f"m{n}")])
        assert [name for _, name in report.delivered] == ["pusher"]
    manager.close()
    manager.state.close()

    subscriber = subscriber_factory()
    subscriber.subscribe("private-admin-health")
    worker = CeleryWorker(env, queues="broadcast", concurrency=1)
    beat = CeleryBeat(env)
    processes.extend([worker, beat])
    worker.start()
    beat.start()
    (event,) = subscriber.wait_for_events("private-admin-health", "health", timeout_s=30)[:1]
    health = event["data"]
    pusher = next(b for b in health["broadcasters"] if b["name"] == "pusher")
    log = next(b for b in health["broadcasters"] if b["name"] == "log")
    assert pusher["failed_last_hour"] == {"quota": 1}
    assert pusher["sent_last_hour"] == known
    assert pusher["requests_last_hour"] == known + 1
    assert log["sent_last_hour"] == 1
    assert pusher["state"] == "enabled"
    assert pusher["daily_quota"] == 200_000
    assert pusher["usage_today"] == known
    assert pusher["latency_p50_ms"] in LATENCY_BUCKETS_MS, "a bucket of the requests made"
    assert pusher["latency_p50_ms"] <= pusher["latency_p95_ms"] in LATENCY_BUCKETS_MS
    assert health["active_broadcaster"] == "pusher"

    more = subscriber.wait_for_events("private-admin-health", "health", count=3, timeout_s=30)
    generated = [event["data"]["generated_at"] for event in more]
    assert generated == sorted(set(generated)), "a new report each interval, not the same again"
    status = relaycast_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["healthy"] is True


def test_status_exit_codes_for_healthy_degraded_and_stale(
    broker: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"REDIS_URL": broker, "DATABASE_URL": sqlite_url, "RELAYCAST_BROADCASTERS": "log",
           "RELAYCAST_HEALTH_INTERVAL_S": "30", "RELAYCAST_FLAG_CACHE_MS": "0",
           "RELAYCAST_STATE_PREFIX": f"s{uuid.uuid4().hex[:6]}:"}
    stale = relaycast_cli("status", env=env)
    assert stale.returncode == 1
    assert "stale" in stale.stdout

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from tasks import runtime
    from tasks.health import health

    runtime.reset()
    try:
        with Connection(broker) as connection:  # three batches waiting, no worker to take them
            queue = connection.SimpleQueue(BROADCAST_QUEUE)
            for n in range(3):
                queue.put({"n": n})
            queue.close()
        report = health()
        assert report["pipeline"]["broadcast_queue_depth"] == 3
        assert report["healthy"] is True
        healthy = relaycast_cli("status", env=env)
        assert healthy.returncode == 0, healthy.stdout
        assert "overall: healthy" in healthy.stdout

        disabled = relaycast_cli("disable", "log", "--for", "10m", "--reason", "drill", env=env)
        assert disabled.returncode == 0
        report = health()  # RELAYCAST_FLAG_CACHE_MS=0: the flag another process set is seen
        assert report["healthy"] is False
        assert report["problems"] == ["log disabled: drill"]
        degraded = relaycast_cli("status", "--json", env=env)
        assert degraded.returncode == 1
        assert json.loads(degraded.stdout)["problems"] == ["log disabled: drill"]
    finally:
        runtime.reset()
