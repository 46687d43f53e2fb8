"""Alerts end to end: two real ``celery -A relaycast worker`` processes and ``celery beat``
(health every second), the real pusher SDK against a fault-injecting Pusher stand-in, and a
local HTTP server as the alert webhook recording every POST. Each transition reaches the
webhook exactly once, however many health tasks observe it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from support.emitting import wait_until
from support.fault_server import FaultServer
from support.runs import run_env
from support.workers import CeleryBeat, CeleryWorker, Started, relaycast_cli

from broadcasters.alert_sink import verify
from broadcasters.base import Message
from broadcasters.factory import build_manager
from broadcasters.wire import BROADCAST_QUEUE, HEALTH_TASK
from config import load_settings

SECRET = "pipeline-alert-secret-0123456789"
DAILY_QUOTA = 1000
#: Health tasks run by beat (every second) and by hand; a transition is posted once whatever
#: the number that observe it, so the test watches a few intervals after each one.
SETTLE_S = 4.0


@pytest.fixture
def sink() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


def _alerts(sink: FaultServer, kind: str, broadcaster: str | None = None) -> list[dict[str, Any]]:
    found = []
    for request in sink.requests:
        fields = request.json()["relaycast"]
        if fields["kind"] == kind and (broadcaster is None or fields.get("broadcaster") == broadcaster):
            found.append(fields)
    return found


def _wait_for(sink: FaultServer, kind: str, broadcaster: str | None = None) -> dict[str, Any]:
    assert wait_until(lambda: bool(_alerts(sink, kind, broadcaster)), timeout_s=90), (
        kind, [r.json()["relaycast"]["kind"] for r in sink.requests])
    return _alerts(sink, kind, broadcaster)[0]


def _many_health_tasks(broker: str, count: int = 8) -> None:
    """Health tasks at once, on top of beat's: the workers' four processes run them together."""
    app = Celery("alerts-test", broker=broker)
    try:
        for _ in range(count):
            app.send_task(HEALTH_TASK, queue=BROADCAST_QUEUE)
    finally:
        app.close()


def test_quota_and_recovery_alert_once_each_with_two_workers_and_beat(
        broker: str, sqlite_url: str, fault_server: FaultServer, sink: FaultServer,
        workers: Started) -> None:
    env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="app-key",
                  PUSHER_SECRET="pusher-secret", **fault_server.env(),
                  RELAYCAST_BROADCASTERS="pusher,log", RELAYCAST_HEALTH_INTERVAL_S="1",
                  RELAYCAST_FLAG_CACHE_MS="0", RELAYCAST_PROVIDER_TIMEOUT_S="2",
                  RELAYCAST_DAILY_QUOTA=str(DAILY_QUOTA),
                  RELAYCAST_ALERT_WEBHOOK_URL=sink.url + "/hooks/relaycast",
                  RELAYCAST_ALERT_SECRET=SECRET)
    workers.start(CeleryWorker(env, queues="broadcast", concurrency=2, name="a1"),
                  CeleryWorker(env, queues="broadcast", concurrency=2, name="a2"),
                  CeleryBeat(env))
    time.sleep(SETTLE_S)
    assert sink.requests == [], "healthy, Pusher enabled, under 80 %: nothing to say"

    # Usage crosses 80 % of the day's quota (the health reports' own messages count too).
    manager = build_manager(load_settings(**env))
    try:
        for n in range(80):
            report = manager.send([Message.from_data("private-admin-events", "tick", {"n": n},
                                                     f"tick:{n}:{i}") for i in range(10)])
            assert len(report.delivered) == 10
    finally:
        manager.close()
        manager.state.close()
    warning = _wait_for(sink, "quota_warning", "pusher")
    assert (warning["from"], warning["to"], warning["daily_quota"]) == ("0%", "80%", DAILY_QUOTA)
    assert warning["usage_today"] >= 800

    # Pusher answers its next request "over quota" (403): the worker publishing the next
    # health report flags it off for every worker.
    fault_server.respond(403, "Over quota", times=1)
    disabled = _wait_for(sink, "broadcaster_disabled", "pusher")
    assert disabled["reason"] == "quota exceeded: Over quota"
    assert (disabled["from"], disabled["to"], disabled["cause"]) == ("enabled", "disabled", "quota")
    _many_health_tasks(broker)
    time.sleep(SETTLE_S)
    assert len(_alerts(sink, "broadcaster_disabled", "pusher")) == 1
    assert len(_alerts(sink, "health_degraded")) == 1
    assert len(_alerts(sink, "quota_warning", "pusher")) == 1

    # An operator lifts the flag: Pusher is enabled, traffic returns to it, health recovers.
    enabled = relaycast_cli("enable", "pusher", env=env)
    assert enabled.returncode == 0, enabled.stderr
    assert _wait_for(sink, "broadcaster_enabled", "pusher")["to"] == "enabled"
    recovered = _wait_for(sink, "health_recovered")
    assert recovered["problems"] == []
    _many_health_tasks(broker)
    time.sleep(SETTLE_S)

    kinds = sorted(request.json()["relaycast"]["kind"] for request in sink.requests)
    assert kinds == sorted(["quota_warning", "broadcaster_disabled", "health_degraded",
                            "broadcaster_enabled", "health_recovered"]), (
        "one POST per transition, with two workers, beat and extra health tasks running")
    for request in sink.requests:
        assert request.path == "/hooks/relaycast"
        assert verify(SECRET, request.body, request.headers), "every alert is signed"
        assert request.json()["text"]
    for request in sink.requests:
        print("ALERT", request.body.decode())
    status = relaycast_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stdout
