"""Application events (``broadcast(channel, event, data)``) end to end: a user's script emits,
real ``celery -A relaycast worker`` processes publish through soketi (behind a jittery proxy),
the real pusher SDK, a fault server and a local Ably server; a Pusher-protocol subscriber, the
local Ably server and ``relaycast status --json`` say what arrived. ``/pusher/auth`` through
``relaycast api``."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.ably_server import AblyServer
from support.api import ApiServer
from support.emitting import Recorder, installed_as_the_process_emitter, wait_until
from support.fault_server import FaultServer
from support.pusher_ws import Subscriber
from support.runs import run_env
from support.servers import Soketi, free_port
from support.workers import CeleryWorker, ForwardingProxy, Started, relaycast_cli, run_python

from workflows.app_events import broadcast
from workflows.emitter import Emitter
from workflows.store import LogStore

SubscriberFactory = Callable[..., Subscriber]
TOKEN = "app-events-admin-token-0123456789"

#: A user's script: ``broadcast()`` N events round-robin over C channels, in spurts (so they
#: travel in many broadcast tasks that two worker processes publish at once).
EMITTER = '''
import sys, time
import tasks.celery_app  # wires this process's emitter to the broadcast queue
from workflows.app_events import broadcast
from workflows.process import get_emitter

prefix, count, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    broadcast(f"{prefix}-{i % channels}", "progress", {"i": i, "percent": i % 100})
    if i % 25 == 24:
        time.sleep(0.06)
assert get_emitter().flush(120), "every event handed to the broadcast queue"
'''


def _emit(tmp_path: Path, env: dict[str, str], prefix: str, count: int, channels: int) -> None:
    script = tmp_path / "emit_app_events.py"
    script.write_text(EMITTER)
    result = run_python(str(script), prefix, str(count), str(channels), env=env, cwd=tmp_path,
                        timeout_s=300)
    assert result.returncode == 0, result.stderr


def _status(env: dict[str, str]) -> dict[str, Any]:
    status = relaycast_cli("status", "--json", env=env)
    assert status.stdout, status.stderr
    report: dict[str, Any] = json.loads(status.stdout)
    return report


def _sent(env: dict[str, str]) -> int:
    return int(_status(env)["pipeline"]["app_events_sent_last_hour"])


# Order, fallback and dead letters, with real workers --------------------------------------------

def test_a_thousand_events_on_ten_channels_arrive_in_emit_order_per_channel_and_are_counted(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, tmp_path: Path,
) -> None:
    proxy = ForwardingProxy(soketi.url, jitter_s=0.02)  # requests may overtake each other
    try:
        env = run_env(broker, sqlite_url, **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                      RELAYCAST_BROADCASTERS="pusher,log")
        workers.start(CeleryWorker(env, queues="broadcast", concurrency=2))
        prefix = f"orders-{uuid.uuid4().hex[:6]}"
        subscriber = subscriber_factory()
        channels = [f"private-{prefix}-{c}" for c in range(10)]
        for channel in channels:
            subscriber.subscribe(channel)

        _emit(tmp_path, env, prefix, 1000, 10)

        subscriber.wait_for_events(event="progress", count=1000, timeout_s=180)
        for c, channel in enumerate(channels):
            received = [e["data"]["i"] for e in subscriber.events(channel, "progress")]
            assert received == list(range(c, 1000, 10)), f"{channel}: every event once, in order"
        assert len({at for at, _, name in proxy.published if name == "progress"}) > 1, (
            "the events travelled in several requests")
        assert wait_until(lambda: _sent(env) >= 1000, timeout_s=60)
        pipeline = _status(env)["pipeline"]
        assert pipeline["app_events_sent_last_hour"] == 1000
        assert pipeline["app_events_dead_lettered_last_hour"] == 0
        table = relaycast_cli("status", env=env)
        assert "app events: sent 1000/1h" in table.stdout
    finally:
        proxy.close()


def test_with_pusher_over_quota_app_events_go_through_the_next_broadcaster_in_order(
    broker: str, sqlite_url: str, fault_server: FaultServer, workers: Started, tmp_path: Path,
) -> None:
    fault_server.respond(403, "Over quota")
    with AblyServer() as ably:
        env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="app-key",
                      PUSHER_SECRET="s", **fault_server.env(), ABLY_API_KEY="app.key:secret",
                      **ably.env(), RELAYCAST_BROADCASTERS="pusher,ably")
        workers.start(CeleryWorker(env, queues="broadcast", concurrency=2))
        prefix = f"ship-{uuid.uuid4().hex[:6]}"
        _emit(tmp_path, env, prefix, 200, 2)

        def on_ably() -> list[Any]:
            return [m for m in ably.messages if m.channel.startswith(f"private-{prefix}-")]

        assert wait_until(lambda: len(on_ably()) >= 200, timeout_s=120), len(on_ably())
        for c in range(2):
            got = [m.decoded()["i"] for m in on_ably() if m.channel == f"private-{prefix}-{c}"]
            assert got == list(range(c, 200, 2)), "every event once, in emit order"
        assert {m.name for m in on_ably()} == {"progress"}
        assert 1 <= fault_server.count("/apps/1/batch_events") <= 2, (
            "the quota answer switched Pusher off for both worker processes")
        assert wait_until(lambda: _sent(env) >= 200, timeout_s=60)
        report = _status(env)
        assert report["pipeline"]["app_events_sent_last_hour"] == 200
        pusher = next(b for b in report["broadcasters"] if b["name"] == "pusher")
        assert pusher["state"] == "disabled" and pusher["cause"] == "quota"


def test_app_events_no_broadcaster_can_take_are_dead_lettered_and_counted(
    broker: str, sqlite_url: str, fault_server: FaultServer, workers: Started, tmp_path: Path,
) -> None:
    fault_server.respond(400, "Invalid channel name")  # final: retrying cannot help
    env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="app-key", PUSHER_SECRET="s",
                  **fault_server.env(), RELAYCAST_BROADCASTERS="pusher",
                  # The report's problems count the last health interval: make it span the
                  # whole test, however slow the machine (a window, not a bound).
                  RELAYCAST_HEALTH_INTERVAL_S="3600")
    worker = CeleryWorker(env, queues="broadcast", concurrency=1)
    workers.start(worker)
    _emit(tmp_path, env, "refused", 30, 3)

    def dead() -> int:
        return int(_status(env)["pipeline"]["app_events_dead_lettered_last_hour"])

    assert wait_until(lambda: dead() >= 30, timeout_s=60), dead()
    report = _status(env)
    assert report["pipeline"]["app_events_dead_lettered_last_hour"] == 30
    assert report["pipeline"]["app_events_failed_last_hour"] == 30
    assert report["pipeline"]["app_events_sent_last_hour"] == 0
    assert any("app event(s) dead-lettered" in p for p in report["problems"])
    assert "app event dead-lettered: channel=private-refused-0 event=progress" in worker.log_tail()


# Checked at the call -----------------------------------------------------------------------------

@pytest.fixture
def installed(sqlite_store: LogStore) -> Iterator[tuple[Emitter, Recorder]]:
    """An emitter installed as the process's own (batches recorded); reset afterwards."""
    recorder = Recorder()
    emitter = Emitter(store=lambda: sqlite_store, enqueue=recorder, flush_interval_ms=10,
                      app_event_max_bytes=10_000)
    with installed_as_the_process_emitter(emitter):
        yield emitter, recorder


@pytest.mark.parametrize(("channel", "says"), [
    ("has space", "invalid channel 'has space': use only letters, digits and _ - = @ , . ;"),
    ("", "invalid channel '': use only"),
    ("x" * 157, "with the prefix 'private-' it is 165 characters; Pusher allows 164"),
    ("logs-run-1", "relaycast's own channels"),
    ("admin-events", "relaycast's own channels"),
    ("admin-health", "relaycast's own channels"),
    ("admin-dashboard", "relaycast's own channels"),
    ("encrypted-orders", "private-encrypted- channels are not supported"),
])
def test_a_channel_pusher_would_refuse_or_relaycasts_own_is_a_value_error_at_the_call(
    installed: tuple[Emitter, Recorder], channel: str, says: str,
) -> None:
    with pytest.raises(ValueError, match="invalid channel") as refused:
        broadcast(channel, "shipped", {"id": 1})
    assert says in str(refused.value)


@pytest.mark.parametrize(("event", "says"), [
    ("", "invalid event name '': it must be a non-empty string"),
    ("e" * 201, "it is 201 characters; Pusher allows 200"),
    ("pusher:subscribe", "reserved"),
    ("pusher_internal:member_added", "reserved"),
    ("disconnect", "reserved"),
])
def test_a_bad_event_name_is_a_value_error_naming_it(
    installed: tuple[Emitter, Recorder], event: str, says: str,
) -> None:
    with pytest.raises(ValueError, match="invalid event name") as refused:
        broadcast("orders", event, {"id": 1})
    assert says in str(refused.value)


@pytest.mark.parametrize(("data", "says"), [
    ({"when": object()}, "is not JSON-serialisable: Object of type object"),
    ({"ratio": float("nan")}, "is not JSON-serialisable"),
    ({1, 2}, "is not JSON-serialisable: Object of type set"),
    ({"text": "x" * 9_990}, "is 10001 bytes as JSON; at most 10000 are allowed"),
    ({"text": "é" * 5_000}, "bytes as JSON; at most 10000"),
])
def test_data_that_is_not_json_or_over_the_size_limit_is_a_value_error(
    installed: tuple[Emitter, Recorder], data: Any, says: str,
) -> None:
    with pytest.raises(ValueError, match="data of event 'shipped' on 'orders'") as refused:
        broadcast("orders", "shipped", data)
    assert says in str(refused.value)


def test_refused_calls_send_nothing_and_good_ones_are_numbered_per_channel(
    installed: tuple[Emitter, Recorder],
) -> None:
    emitter, recorder = installed
    with pytest.raises(ValueError, match="invalid channel"):
        broadcast("bad channel", "shipped", {})
    data = {"id": 7, "items": ["a", "b"], "note": "ünïcode"}
    broadcast("orders", "shipped", data)
    data["id"] = 8  # encoded at the call: later changes are not sent
    broadcast("orders", "shipped", {"id": 9})
    broadcast("progress-1", "progress", 40)
    broadcast("orders", "log", {"x": "x" * 9_000})  # exactly allowed, any event name
    assert emitter.flush(10)
    sent = [m for batch in recorder.batches for m in batch.get("app", [])]
    assert [(m["channel"], m["event"], m["seq"]) for m in sent] == [
        ("private-orders", "shipped", 1), ("private-orders", "shipped", 2),
        ("private-progress-1", "progress", 1), ("private-orders", "log", 3)]
    assert json.loads(sent[0]["payload"]) == {"id": 7, "items": ["a", "b"], "note": "ünïcode"}
    assert json.loads(sent[2]["payload"]) == 40
    assert sent[0]["stream"] == sent[1]["stream"] != sent[2]["stream"]
    assert all(m["id"].startswith("app/") for m in sent)


# /pusher/auth --------------------------------------------------------------------------------

AUTHORIZER = '''
def can_subscribe(request, channel):
    """Alice may follow orders; nobody else may follow anything."""
    return request.headers.get("x-app-user") == "alice" and channel.startswith("orders")
'''


def _auth(api: ApiServer, channel: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{api.url}/pusher/auth", data={"socket_id": "123.456",
                                                         "channel_name": channel},
                         headers=headers, timeout=10)


def _signature(channel: str) -> str:
    digest = hmac.new(b"s", f"123.456:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"app-key:{digest}"


def test_pusher_auth_grants_app_channels_to_the_admin_and_to_whom_the_authorizer_allows(
    tmp_path: Path, closing: list[Any],
) -> None:
    (tmp_path / "acme_auth.py").write_text(textwrap.dedent(AUTHORIZER))
    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": "s",
           "RELAYCAST_ADMIN_TOKEN": TOKEN, "RELAYCAST_CHANNEL_AUTHORIZER": "acme_auth:can_subscribe",
           "PYTHONPATH": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    api = ApiServer(env)
    closing.append(api)
    api.start()
    admin = {"Authorization": f"Bearer {TOKEN}"}

    granted = _auth(api, "private-orders-42", admin)
    assert granted.status_code == 200, granted.text
    assert granted.json()["auth"] == _signature("private-orders-42")
    assert _auth(api, "private-invoices", admin).status_code == 200, "the admin needs no authorizer"

    alice = {"X-App-User": "alice"}
    allowed = _auth(api, "private-orders-42", alice)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["auth"] == _signature("private-orders-42")
    refused = _auth(api, "private-invoices", alice)
    assert refused.status_code == 403
    assert "authorizer refused private-invoices" in refused.json()["detail"]
    assert _auth(api, "private-orders-42", {"X-App-User": "bob"}).status_code == 403
    for own in ("private-admin-events", "private-logs-run-1", "private-admin-health"):
        assert _auth(api, own, alice).status_code == 401, f"{own} stays the admin's"
    assert _auth(api, "private-logs-run-1", admin).status_code == 200
    assert _auth(api, "presence-orders", admin).status_code == 403, "not under the prefix"


@pytest.mark.parametrize(("value", "says"), [
    ("no_such_module_here:can", "RELAYCAST_CHANNEL_AUTHORIZER: cannot import 'no_such_module_here'"),
    ("json:no_such_function", "RELAYCAST_CHANNEL_AUTHORIZER: 'json' has no callable"),
    ("json", "RELAYCAST_CHANNEL_AUTHORIZER: use module:function"),
])
def test_an_authorizer_that_cannot_be_used_stops_the_api_in_one_line(
    value: str, says: str, tmp_path: Path,
) -> None:
    result = relaycast_cli("api", "--port", str(free_port()),
                           env={"RELAYCAST_CHANNEL_AUTHORIZER": value,
                                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"},
                           timeout_s=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("relaycast: ")]
    assert says in line, result.stderr
