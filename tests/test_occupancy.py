"""Broadcast only what someone watches: occupancy from signed webhooks, reconciled.

soketi sends its ``channel_occupied`` / ``channel_vacated`` webhooks to a real ``relaycast
api``; workers publish to soketi through a proxy that counts what they publish; beat
reconciles occupancy against soketi's channels API; a private Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from support.api import ApiServer
from support.emitting import wait_until
from support.pusher_ws import Subscriber
from support.runs import has_lines, run_env, seqs_received, start_run
from support.servers import RedisServer, Soketi, SoketiFactory, free_port
from support.workers import CeleryBeat, CeleryWorker, ForwardingProxy, Started

from broadcasters.backends import MemoryBackend, RedisBackend
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState
from workflows.models import LineState
from workflows.store import LogStore

SECRET = "app-secret"
KEY = "app-key"
RECONCILE_S = 2.0


# The policy, on each backend --------------------------------------------------------------------


def test_occupancy_is_unknown_until_reconciled_and_then_the_newest_event_wins(
        shared_state: SharedState) -> None:
    now = [1000.0]
    occupancy = Occupancy(shared_state, reconcile_s=10, clock=lambda: now[0])
    a, b = "private-logs-a", "private-logs-b"
    assert occupancy.watched([a, b]) is None, "not reconciled yet: unknown, publish"
    occupancy.reconcile([a], asked_at_ms=1_000_000)
    assert occupancy.watched([a, b]) == {a: True, b: False}
    assert occupancy.record([(b, True)], time_ms=1_000_500) == [b]
    assert occupancy.record([(b, False)], time_ms=1_000_400) == [], "an older webhook is ignored"
    assert occupancy.watched([b]) == {b: True}
    assert occupancy.record([(a, False)], time_ms=1_000_600) == [a]
    assert occupancy.watched([a, b]) == {a: False, b: True}
    assert occupancy.occupied_channels() == [b]


def test_reconciling_replaces_what_webhooks_said_but_keeps_what_came_after_the_question(
        shared_state: SharedState) -> None:
    occupancy = Occupancy(shared_state, reconcile_s=10)
    a, b, c = "private-logs-a", "private-logs-b", "private-logs-c"
    occupancy.record([(a, True), (b, True)], time_ms=1000)
    occupancy.record([(c, True)], time_ms=3000)  # after the question below was asked
    occupancy.reconcile([b], asked_at_ms=2000)  # a's vacated webhook was lost
    assert occupancy.watched([a, b, c]) == {a: False, b: True, c: True}


def test_occupancy_goes_unknown_when_reconciling_keeps_failing() -> None:
    now = [0.0]
    occupancy = Occupancy(SharedState(MemoryBackend()), reconcile_s=10, clock=lambda: now[0])
    occupancy.reconcile([], asked_at_ms=0)
    now[0] = 29.0
    assert occupancy.watched(["private-logs-a"]) == {"private-logs-a": False}
    now[0] = 31.0
    assert occupancy.watched(["private-logs-a"]) is None, "three intervals without a reconcile"


def test_with_redis_unreachable_occupancy_is_unknown() -> None:
    state = SharedState(RedisBackend.from_url("redis://127.0.0.1:1/0", timeout_s=0.2))
    assert Occupancy(state, reconcile_s=10).watched(["private-logs-a"]) is None
    assert state.errors == 1


# The stack ----------------------------------------------------------------------------------


@dataclass
class Gated:
    env: dict[str, str]
    soketi: Soketi
    proxy: ForwardingProxy
    api: ApiServer
    worker: CeleryWorker
    beat: CeleryBeat

    def subscriber(self) -> Subscriber:
        return Subscriber(self.soketi.host, self.soketi.port, self.soketi.key, self.soketi.secret)


def _until_occupancy(env: dict[str, str], check: Callable[[Occupancy], bool],
                     timeout_s: float = 30) -> None:
    """Wait until what the workers would read from the shared state passes ``check``."""
    state = SharedState(RedisBackend.from_url(env["REDIS_URL"], env["RELAYCAST_STATE_PREFIX"]))
    try:
        occupancy = Occupancy(state, reconcile_s=RECONCILE_S)
        assert wait_until(lambda: check(occupancy), timeout_s), "occupancy never got there"
    finally:
        state.close()


def _until_watched(stack: Gated, channel: str) -> None:
    """The channel's occupied webhook has reached the api and been recorded."""
    _until_occupancy(stack.env, lambda o: o.watched([channel]) == {channel: True})


def _webhooks_to(port: int) -> dict[str, str]:
    return {"SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps([{
        "url": f"http://127.0.0.1:{port}/pusher/webhook",
        "event_types": ["channel_occupied", "channel_vacated"]}])}


@pytest.fixture
def gated(broker: str, sqlite_url: str, soketi_factory: SoketiFactory,
          workers: Started) -> Iterator[Callable[..., Gated]]:
    """``gated(api=True, state_url=None)``: soketi with webhooks to a relaycast api, workers
    publishing through a counting proxy, beat reconciling every 2 s."""
    made: list[Any] = []

    def make(*, api: bool = True, state_url: str | None = None) -> Gated:
        api_port = free_port()
        soketi = soketi_factory(extra_env=_webhooks_to(api_port))
        proxy = ForwardingProxy(soketi.url)
        made.append(proxy)
        env = run_env(state_url or broker, sqlite_url,
                      **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                      CELERY_BROKER_URL=broker, RELAYCAST_OCCUPANCY="webhooks",
                      RELAYCAST_OCCUPANCY_RECONCILE_S=str(RECONCILE_S),
                      RELAYCAST_BROADCASTERS="pusher,log")
        server = ApiServer(env, port=api_port)
        made.append(server)
        if api:
            server.start()
        worker, beat = CeleryWorker(env, concurrency=2), CeleryBeat(env)
        workers.start(worker, beat)
        _until_occupancy(env, lambda o: o.known())  # beat's first reconciliation succeeded
        return Gated(env, soketi, proxy, server, worker, beat)

    yield make
    for item in reversed(made):
        item.close()


def _log_publishes(stack: Gated, run_id: str) -> list[float]:
    return stack.proxy.published_to(f"private-logs-{run_id}", "log")


def _wait_until_ended(store: LogStore, run_id: str, timeout_s: float = 120) -> None:
    """Until the run has ended and the broadcast worker has had every line of it (none is
    still pending: on a loaded machine the last batches follow the run's end by seconds)."""
    deadline = time.monotonic() + timeout_s
    while (run := store.run(run_id)) is None or run.status == "running":
        assert time.monotonic() < deadline, f"run {run_id} did not end"
        time.sleep(0.2)
    while any(state == LineState.PENDING for state, _ in store.broadcast_counts([run_id])):
        assert time.monotonic() < deadline, f"run {run_id}'s lines still pending"
        time.sleep(0.2)


def _store(stack: Gated) -> LogStore:
    return LogStore.from_url(stack.env["DATABASE_URL"])


# The Show list ------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_an_unwatched_run_is_stored_in_full_and_never_published(
        gated: Callable[..., Gated]) -> None:
    stack = gated()
    admin = stack.subscriber()
    admin.subscribe("private-admin-events")
    run_id = f"unwatched-{uuid.uuid4().hex[:6]}"
    start_run(stack.env, "burst", run_id, lines=2000, delay_ms=1)
    admin.wait_for(lambda events: any(e["event"] == "finished" and e["data"]["run_id"] == run_id
                                      for e in events), timeout_s=60)
    store = _store(stack)
    try:
        deadline = time.monotonic() + 30
        while store.broadcast_counts([run_id]) != {(LineState.SKIPPED, None): 2000}:
            assert time.monotonic() < deadline, store.broadcast_counts([run_id])
            time.sleep(0.2)
        assert [line.seq for line in store.lines(run_id)] == list(range(1, 2001))
    finally:
        store.close()
    assert _log_publishes(stack, run_id) == [], "zero publishes on its log channel"
    assert stack.proxy.published_to("private-admin-events", "started"), "admin events still go"
    status = requests.get(f"{stack.api.url}/admin/broadcaster-status", timeout=10).json()
    assert status["pipeline"]["occupancy"] == "known"
    assert status["pipeline"]["unwatched_lines_today"] >= 2000
    assert status["pipeline"]["unwatched_messages_today"] >= 2000 // 100
    admin.close()


@pytest.mark.timeout(180)
def test_a_run_watched_from_the_start_is_published_in_full(gated: Callable[..., Gated]) -> None:
    stack = gated()
    run_id = f"watched-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    subscriber = stack.subscriber()
    subscriber.subscribe(channel)
    _until_watched(stack, channel)
    start_run(stack.env, "burst", run_id, lines=1500, delay_ms=1)
    subscriber.wait_for(has_lines(subscriber, channel, 1500), timeout_s=60)
    assert sorted(set(seqs_received(subscriber, channel))) == list(range(1, 1501))
    subscriber.close()


@pytest.mark.timeout(180)
def test_a_watcher_joining_mid_run_gets_live_lines_while_it_runs_and_history_the_rest(
        gated: Callable[..., Gated]) -> None:
    stack = gated()
    run_id = f"joins-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    total = 3000
    start_run(stack.env, "burst", run_id, lines=total, delay_ms=5)  # about 20 s
    store = _store(stack)
    try:
        deadline = time.monotonic() + 60
        while store.line_counts([run_id]).get(run_id, (0, 0))[0] < 500:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _log_publishes(stack, run_id) == [], "nobody watched so far"
        subscriber = stack.subscriber()
        subscriber.subscribe(channel)
        subscribed = time.monotonic()
        subscriber.wait_for(has_lines(subscriber, channel, 1), timeout_s=60)
        first_live_s = subscriber.events(channel, "log")[0]["received_at"] - subscribed
        joined_run = store.run(run_id)
        assert joined_run is not None
        assert joined_run.status == "running", "live lines came while the run was still going"
        history = [line.seq for line in store.lines(run_id)]  # what the client loads after subscribing
        deadline = time.monotonic() + 60
        while set(seqs_received(subscriber, channel)) | set(history) < set(range(1, total + 1)):
            assert time.monotonic() < deadline, "history + live never became complete"
            time.sleep(0.2)
    finally:
        store.close()
    print(f"\nfirst live line {first_live_s * 1000:.0f} ms after subscribing")
    live = seqs_received(subscriber, channel)
    assert len(live) == len(set(live)), "no repeat live"
    assert min(live) > 500, "before the subscription nothing was published"
    subscriber.close()


@pytest.mark.timeout(180)
def test_when_the_last_watcher_leaves_publishing_stops_for_the_rest_of_the_run(
        gated: Callable[..., Gated]) -> None:
    stack = gated()
    run_id = f"leaves-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    subscriber = stack.subscriber()
    subscriber.subscribe(channel)
    _until_watched(stack, channel)
    start_run(stack.env, "burst", run_id, lines=3000, delay_ms=5)
    subscriber.wait_for(has_lines(subscriber, channel, 300), timeout_s=60)
    subscriber.unsubscribe(channel)
    left = time.monotonic()
    store = _store(stack)
    try:
        _wait_until_ended(store, run_id)
        after = [t - left for t in _log_publishes(stack, run_id) if t > left]
        print(f"\npublishes after the last watcher left: {len(after)}, the last at "
              f"{max(after, default=0):.2f} s")
        counts = store.broadcast_counts([run_id])
        tail = store.lines(run_id, after_seq=2900)
    finally:
        store.close()
    # Publishing stopped soon after the watcher left (how soon is the README's figure): most
    # of the rest of the run, and its whole end, was kept and marked skipped, not published.
    assert counts.get((LineState.SKIPPED, None), 0) > 1000, "the rest is kept, marked skipped"
    assert {line.broadcast_state for line in tail} == {LineState.SKIPPED}, "to the run's end"
    subscriber.close()


def _signed(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.timeout(120)
def test_a_forged_webhook_changes_nothing_and_is_refused(
        broker: str, sqlite_url: str, redis_server: RedisServer) -> None:
    env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY=KEY, PUSHER_SECRET=SECRET,
                  RELAYCAST_OCCUPANCY="webhooks", RELAYCAST_ADMIN_TOKEN="t" * 20)
    api = ApiServer(env)
    api.start()
    state = SharedState(RedisBackend.from_url(broker, env["RELAYCAST_STATE_PREFIX"]))
    occupancy = Occupancy(state, reconcile_s=60)
    channel = "private-logs-forged"
    try:
        body = json.dumps({"time_ms": int(time.time() * 1000), "events": [
            {"name": "channel_occupied", "channel": channel}]}).encode()
        url = f"{api.url}/pusher/webhook"
        for headers in ({}, {"X-Pusher-Key": KEY},
                        {"X-Pusher-Key": KEY, "X-Pusher-Signature": _signed(body, "wrong")},
                        {"X-Pusher-Key": "another-key", "X-Pusher-Signature": _signed(body)}):
            answer = requests.post(url, data=body, headers=headers, timeout=10)
            assert answer.status_code == 401, headers
        old = json.dumps({"time_ms": int(time.time() * 1000) - 600_000, "events": [
            {"name": "channel_occupied", "channel": channel}]}).encode()
        replayed = requests.post(url, data=old, timeout=10, headers={
            "X-Pusher-Key": KEY, "X-Pusher-Signature": _signed(old)})
        assert replayed.status_code == 401, "a body older than five minutes"
        assert occupancy.occupied_channels() == [], "nothing recorded"
        genuine = requests.post(url, data=body, timeout=10, headers={
            "X-Pusher-Key": KEY, "X-Pusher-Signature": _signed(body)})
        assert genuine.status_code == 200 and genuine.json()["recorded"] == 1
        assert occupancy.occupied_channels() == [channel], "the real one is recorded (no token)"
    finally:
        api.close()
        state.close()


@pytest.mark.timeout(180)
def test_a_lost_webhook_is_made_good_by_reconciliation(gated: Callable[..., Gated]) -> None:
    stack = gated(api=False)  # the api is down: soketi's webhooks go nowhere, never retried
    run_id = f"lost-webhook-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    start_run(stack.env, "burst", run_id, lines=3000, delay_ms=5)
    store = _store(stack)
    try:  # the run is under way, unwatched
        assert wait_until(lambda: store.line_counts([run_id]).get(run_id, (0, 0))[0] >= 300, 60)
    finally:
        store.close()
    subscriber = stack.subscriber()
    subscriber.subscribe(channel)
    subscribed = time.monotonic()
    subscriber.wait_for(has_lines(subscriber, channel, 1), timeout_s=RECONCILE_S + 5)
    waited = subscriber.events(channel, "log")[0]["received_at"] - subscribed
    print(f"\nwebhook lost: first live line {waited:.2f} s after subscribing (reconcile every "
          f"{RECONCILE_S:.0f} s)")
    assert waited <= RECONCILE_S + 1.0
    subscriber.close()


@pytest.mark.timeout(180)
def test_with_the_shared_state_down_gating_fails_open_and_nothing_is_lost(
        gated: Callable[..., Gated]) -> None:
    with RedisServer() as state_redis:
        stack = gated(state_url=state_redis.url)
        state_redis.stop()  # occupancy, flags, counters: all unreachable; the broker is not
        run_id = f"state-down-{uuid.uuid4().hex[:6]}"
        channel = f"private-logs-{run_id}"
        subscriber = stack.subscriber()
        subscriber.subscribe(channel)  # its occupied webhook cannot be recorded (api: 503)
        start_run(stack.env, "burst", run_id, lines=1000, delay_ms=1)
        subscriber.wait_for(has_lines(subscriber, channel, 1000), timeout_s=90)
        assert sorted(set(seqs_received(subscriber, channel))) == list(range(1, 1001)), (
            "unknown occupancy publishes everything")
        store = _store(stack)
        try:
            assert [line.seq for line in store.lines(run_id)] == list(range(1, 1001))
        finally:
            store.close()
        subscriber.close()
