"""Socket.IO: the ``socketio`` broadcaster, ``relaycast socketio`` and the mirror mode.

Real ``relaycast socketio`` servers (subprocesses), python-socketio clients, a private Redis
as broker, shared state and Socket.IO message queue, real workers, soketi.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import requests
import socketio
import websocket
from support.api import SocketIOServer
from support.fault_server import FaultServer
from support.pusher_ws import Subscriber
from support.runs import has_lines, run_env, seqs_received, start_run
from support.servers import Soketi
from support.socketio import SocketIOClient
from support.workers import CeleryWorker, Started

from broadcasters.backends import MemoryBackend
from broadcasters.base import Message
from broadcasters.factory import build_manager
from broadcasters.state import SharedState
from config import load_settings
from relaycast.api.socketio_server import MAX_SUBSCRIPTIONS

SubscriberFactory = Callable[..., Subscriber]
TOKEN = "socketio-token-for-tests"


def _server(env: dict[str, str], closing: list[Any]) -> SocketIOServer:
    server = SocketIOServer(env)
    closing.append(server)
    server.start()
    return server


def _client(server: SocketIOServer, channel: str, closing: list[Any],
            token: str | None = TOKEN) -> SocketIOClient:
    client = SocketIOClient(server.url, channel, token=token)
    closing.append(client)
    assert client.ack == {"ok": True, "channel": channel}
    return client


def _has_seqs(client: SocketIOClient, count: int) -> bool:
    return len(set(client.seqs())) >= count


def _sio_env(broker: str, database_url: str, **extra: str) -> dict[str, str]:
    return run_env(broker, database_url, SOCKETIO_MESSAGE_QUEUE=broker,
                   RELAYCAST_ADMIN_TOKEN=TOKEN, **extra)


def test_a_run_through_socketio_reaches_a_subscribed_client_once_in_order(
        broker: str, sqlite_url: str, workers: Started, closing: list[Any]) -> None:
    env = _sio_env(broker, sqlite_url, RELAYCAST_BROADCASTERS="socketio")
    server = _server(env, closing)
    run_id = f"sio-{uuid.uuid4().hex[:6]}"
    client = _client(server, f"private-logs-{run_id}", closing)
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    start_run(env, "burst", run_id, lines=1500, delay_ms=1)
    client.wait_for(lambda: len(set(client.seqs())) >= 1500)
    assert client.seqs() == list(range(1, 1501)), "every line once, in order"
    first = client.of("log")[0]
    assert set(first) == {"run_id", "events"} and first["run_id"] == run_id
    assert set(first["events"][0]) == {"seq", "ts", "level", "message", "data"}, (
        "the same data a Pusher subscriber gets")


def test_an_unauthorised_client_or_a_foreign_channel_is_refused(
        broker: str, sqlite_url: str, closing: list[Any]) -> None:
    server = _server(_sio_env(broker, sqlite_url), closing)
    for token in ("wrong-token-of-some-length", None):
        with pytest.raises(socketio.exceptions.ConnectionError):
            SocketIOClient(server.url, "private-logs-run-1", token=token)
    for channel in ("presence-billing", "logs-run-1", "private-admin-secrets",
                    "private-logs-bad id"):
        client = SocketIOClient(server.url, channel, token=TOKEN)
        closing.append(client)
        assert client.ack["ok"] is False
        assert "not a relaycast channel" in client.ack["error"]


def test_without_a_token_only_loopback_pages_may_connect(
        broker: str, sqlite_url: str, closing: list[Any]) -> None:
    """A WebSocket is outside the same-origin policy: any site open in a browser on this
    machine could connect to a loopback server and read the logs, unless the server checks
    the handshake's Origin."""
    env = run_env(broker, sqlite_url, SOCKETIO_MESSAGE_QUEUE=broker)
    server = _server(env, closing)
    endpoint = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    for origin in ("http://127.0.0.1:8000", "http://localhost:3000"):
        socket = websocket.create_connection(endpoint, origin=origin, timeout=10)
        assert str(socket.recv()).startswith("0{"), "the engine.io handshake"
        socket.close()
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(endpoint, origin="https://evil.example", timeout=10)


def test_an_over_long_channel_name_is_refused_and_not_echoed(
        broker: str, sqlite_url: str, closing: list[Any]) -> None:
    """It used to accept and echo 10 KB and 900 KB names: Pusher's 164 characters apply."""
    server = _server(_sio_env(broker, sqlite_url), closing)
    client = SocketIOClient(server.url, "private-logs-" + "r" * 10_240, token=TOKEN)
    closing.append(client)
    assert client.ack["ok"] is False
    assert "164" in client.ack["error"]
    assert "r" * 100 not in client.ack["error"], "not echoed back"
    assert client.client.call("subscribe", {"channel": "private-logs-run-1"},
                              timeout=10)["ok"] is True, "the connection still serves"


def test_a_connection_holds_at_most_the_cap_of_subscriptions(
        broker: str, sqlite_url: str, closing: list[Any]) -> None:
    server = _server(_sio_env(broker, sqlite_url), closing)
    client = _client(server, "private-logs-run-0", closing)
    for n in range(1, MAX_SUBSCRIPTIONS):
        assert client.client.call("subscribe", {"channel": f"private-logs-run-{n}"},
                                  timeout=10)["ok"] is True
    over = client.client.call("subscribe", {"channel": "private-logs-one-too-many"}, timeout=10)
    assert over["ok"] is False and f"at most {MAX_SUBSCRIPTIONS}" in over["error"]
    again = client.client.call("subscribe", {"channel": "private-logs-run-7"}, timeout=10)
    assert again["ok"] is True, "one it already holds is no new subscription"
    assert client.client.call("unsubscribe", {"channel": "private-logs-run-7"},
                              timeout=10)["ok"] is True
    assert client.client.call("subscribe", {"channel": "private-logs-one-too-many"},
                              timeout=10)["ok"] is True, "room again after unsubscribing"


def test_with_a_token_only_the_viewers_host_and_allowed_origins_may_connect(
        broker: str, sqlite_url: str, closing: list[Any]) -> None:
    """engine.io echoed any Origin with Access-Control-Allow-Credentials: any site could use
    a signed-in browser's session. The viewer (relaycast api: this host, its own port) and
    RELAYCAST_ALLOWED_ORIGINS may; others are refused on both transports."""
    server = _server(_sio_env(broker, sqlite_url,
                              RELAYCAST_ALLOWED_ORIGINS="https://admin.example.com"), closing)
    polling = f"{server.url}/socket.io/?EIO=4&transport=polling"
    websocket_url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    own, allowed = "http://127.0.0.1:8000", "https://admin.example.com"
    for origin in (own, allowed):
        answer = requests.get(polling, headers={"Origin": origin}, timeout=10)
        assert answer.status_code == 200 and answer.text.startswith("0{"), origin
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        socket = websocket.create_connection(websocket_url, origin=origin, timeout=10)
        assert str(socket.recv()).startswith("0{"), "the engine.io handshake"
        socket.close()
    for foreign in ("https://evil.example", "http://localhost:8000", "null",
                    "https://admin.example.com.evil.example"):
        answer = requests.get(polling, headers={"Origin": foreign}, timeout=10)
        assert answer.status_code == 400, foreign
        assert "Access-Control-Allow-Origin" not in answer.headers, foreign
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(websocket_url, origin=foreign, timeout=10)
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, transports=["polling"], auth={"token": TOKEN},
                       headers={"Origin": "https://evil.example"}, wait_timeout=10)
    client.disconnect()
    client = socketio.Client(reconnection=False)
    try:
        client.connect(server.url, transports=["polling"], auth={"token": TOKEN},
                       headers={"Origin": allowed}, wait_timeout=10)
        assert client.call("subscribe", {"channel": "private-logs-run-1"},
                           timeout=10)["ok"] is True
    finally:
        client.disconnect()


@pytest.mark.timeout(180)
def test_over_quota_pusher_falls_back_to_socketio_for_every_worker(
        broker: str, sqlite_url: str, fault_server: FaultServer, workers: Started,
        closing: list[Any]) -> None:
    fault_server.respond(403, "Over quota")
    env = _sio_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s",
                   **fault_server.env(), RELAYCAST_BROADCASTERS="pusher,socketio,log")
    server = _server(env, closing)
    runs = [f"quota-sio-{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
    clients = [_client(server, f"private-logs-{r}", closing) for r in runs]
    admin = _client(server, "private-admin-events", closing)
    for name in ("wa", "wb"):
        worker = CeleryWorker(env, concurrency=1, name=name)
        workers.start(worker)
    for run_id in runs:
        start_run(env, "burst", run_id, lines=400, delay_ms=2)
    for client in clients:
        client.wait_for(partial(_has_seqs, client, 400))
        assert sorted(set(client.seqs())) == list(range(1, 401))
    assert 1 <= fault_server.count("/apps/1/batch_events") <= 2, "Pusher was asked at most twice"
    admin.wait_for(lambda: bool(admin.of("provider-changed")))
    changes = admin.of("provider-changed")
    assert [(c["from"], c["to"]) for c in changes] == [("pusher", "socketio")]
    assert changes[0]["reason"].startswith("quota exceeded")


@pytest.mark.timeout(180)
def test_mirror_mode_serves_pusher_and_socketio_front_ends_at_once(
        broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
        workers: Started, closing: list[Any]) -> None:
    env = _sio_env(broker, sqlite_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher,log",
                   RELAYCAST_MIRROR="socketio")
    server = _server(env, closing)
    run_id = f"mirror-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    old_front_end = _client(server, channel, closing)
    new_front_end = subscriber_factory()
    new_front_end.subscribe(channel)
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    start_run(env, "burst", run_id, lines=1000, delay_ms=1)
    new_front_end.wait_for(has_lines(new_front_end, channel, 1000), timeout_s=60)
    old_front_end.wait_for(lambda: len(set(old_front_end.seqs())) >= 1000)
    assert sorted(set(seqs_received(new_front_end, channel))) == list(range(1, 1001))
    assert sorted(set(old_front_end.seqs())) == list(range(1, 1001))
    settings = load_settings(**env)
    state = SharedState(MemoryBackend())
    manager = build_manager(settings, state)
    try:
        report = manager.send([Message.from_data("private-admin-events", "x", {}, "m1")])
        assert [name for _, name in report.delivered] == ["pusher"], "the mirror is not a carrier"
        assert state.counts("mirror:socketio").sent == 1, "counted apart"
        assert state.counts("socketio").sent == 0
    finally:
        manager.close()


@pytest.mark.timeout(180)
def test_two_socketio_servers_on_one_queue_both_deliver_every_line(
        broker: str, sqlite_url: str, workers: Started, closing: list[Any]) -> None:
    env = _sio_env(broker, sqlite_url, RELAYCAST_BROADCASTERS="socketio")
    first, second = _server(env, closing), _server(env, closing)
    run_id = f"two-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    on_first, on_second = _client(first, channel, closing), _client(second, channel, closing)
    worker = CeleryWorker(env, concurrency=2)
    workers.start(worker)
    start_run(env, "burst", run_id, lines=800, delay_ms=1)
    for client in (on_first, on_second):
        client.wait_for(partial(_has_seqs, client, 800))
        assert client.seqs() == list(range(1, 801)), "every line once, in order, on either"


def test_a_publish_no_server_hears_is_a_failure_not_a_delivery(
        broker: str, sqlite_url: str) -> None:
    """With every Socket.IO server down, lines must wait (and the viewer polls), not vanish."""
    settings = load_settings(**_sio_env(broker, sqlite_url, RELAYCAST_BROADCASTERS="socketio,log",
                                        SOCKETIO_CHANNEL=f"nobody-{uuid.uuid4().hex[:6]}"))
    manager = build_manager(settings, SharedState(MemoryBackend()))
    try:
        report = manager.send([Message.from_data("private-admin-events", "x", {}, "m1")])
    finally:
        manager.close()
    assert report.delivered == []
    assert [name for _, name in report.logged] == ["log"]
    assert "no Socket.IO server listens" in str(next(iter(report.pending_errors.values())))
    assert report.next_chance_s == 0.0, "retried: a server may be back in a moment"
