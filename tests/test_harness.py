"""Proves the test harness itself works: each test fails if a piece is broken."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pusher
import pusher.errors
import pytest
import redis
import requests
from support.fault_server import FaultServer
from support.pusher_ws import Subscriber, SubscriberFactory, SubscriptionError, sign_channel
from support.servers import RedisServer, Soketi, SoketiFactory


@contextmanager
def pusher_client(
    host: str, port: int, app_id: str, key: str, secret: str, timeout: float = 5.0
) -> Iterator[pusher.Pusher]:
    """The real pusher SDK, with its requests sessions closed afterwards."""
    client = pusher.Pusher(
        app_id=app_id, key=key, secret=secret, host=host, port=port, ssl=False, timeout=timeout
    )
    try:
        yield client
    finally:
        for inner in (client._pusher_client, client._authentication_client):
            inner.http.session.close()


@contextmanager
def pusher_for(server: Soketi, timeout: float = 5.0) -> Iterator[pusher.Pusher]:
    with pusher_client(server.host, server.port, server.app_id, server.key, server.secret, timeout) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------- soketi + ws


def test_public_channel_event_reaches_subscriber(
    soketi: Soketi, subscriber_factory: SubscriberFactory
) -> None:
    channel = unique("harness")
    sub = subscriber_factory()
    assert sub.socket_id
    sub.subscribe(channel)
    with pusher_for(soketi) as client:
        client.trigger(channel, "log-line", {"line": "hello", "n": 1})
    got = sub.wait_for_events(channel, "log-line", timeout_s=5)
    assert [{k: v for k, v in e.items() if k != "received_at"} for e in got] == [
        {"channel": channel, "event": "log-line", "data": {"line": "hello", "n": 1}}]


def test_private_channel_with_self_signed_and_sdk_signed_auth(
    soketi: Soketi, subscriber_factory: SubscriberFactory
) -> None:
    channel = unique("private-harness")
    self_signed = subscriber_factory()
    self_signed.subscribe(channel)

    sdk_signed = subscriber_factory(secret="")  # no local secret: must use the override
    with pusher_for(soketi) as client:
        auth = client.authenticate(channel=channel, socket_id=sdk_signed.socket_id)["auth"]
        assert auth == sign_channel(soketi.key, soketi.secret, sdk_signed.socket_id, channel)
        sdk_signed.subscribe(channel, auth=auth)
        client.trigger(channel, "admin", {"ok": True})

    for sub in (self_signed, sdk_signed):
        assert sub.wait_for_events(channel, "admin")[0]["data"] == {"ok": True}


def test_private_channel_with_bad_signature_is_refused(
    soketi: Soketi, subscriber_factory: SubscriberFactory
) -> None:
    sub = subscriber_factory(secret="wrong-secret")
    with pytest.raises(SubscriptionError, match="AuthError"):
        sub.subscribe(unique("private-harness"))


def test_wait_for_times_out_with_summary(subscriber_factory: SubscriberFactory) -> None:
    sub = subscriber_factory()
    channel = unique("quiet")
    sub.subscribe(channel)
    started = time.monotonic()
    with pytest.raises(AssertionError, match="subscription_succeeded"):
        sub.wait_for(lambda evs: any(e["event"] == "never" for e in evs), timeout_s=0.3)
    assert time.monotonic() - started < 2


def test_client_ping_is_answered(subscriber_factory: SubscriberFactory) -> None:
    # Soketi answers pusher:ping with pusher:pong; the subscriber swallows pongs,
    # so prove the socket still works afterwards by subscribing.
    sub = subscriber_factory()
    sub.send_raw({"event": "pusher:ping", "data": {}})
    sub.subscribe(unique("after-ping"))
    assert sub.closed_reason is None


def soketi_error_code(response: object) -> int | None:
    """soketi 1.6.1 answers HTTP-API errors with HTTP 200 and ``{"error", "code"}``.

    Its CORS middleware writes headers before ``writeStatus``, so uWebSockets has
    already sent ``200 OK``; the pusher SDK therefore does *not* raise.
    """
    if isinstance(response, dict) and "error" in response:
        code = response.get("code")
        return int(code) if code is not None else None
    return None


def test_soketi_enforces_10kb_event_limit(soketi: Soketi, subscriber_factory: SubscriberFactory) -> None:
    channel = unique("limits")
    sub = subscriber_factory()
    sub.subscribe(channel)
    small = "a" * 10_000  # 10 000 UTF-8 bytes: under 10 KB
    big = "a" * 10_300  # over 10 240 bytes; the SDK's own trigger() check is 30 720
    multibyte = "é" * 5_200  # 10 400 UTF-8 bytes, but sys.getsizeof() is only ~5 KB
    with pusher_for(soketi) as client:
        assert client.trigger(channel, "small", small) == {"ok": True}
        assert soketi_error_code(client.trigger(channel, "big", big)) == 413
        assert soketi_error_code(client.trigger(channel, "multibyte", multibyte)) == 413
        # trigger_batch has a stricter SDK-side getsizeof check (10 240), which the
        # multi-byte payload passes; soketi still rejects it by UTF-8 size.
        batch = [{"channel": channel, "name": "batch", "data": multibyte}]
        assert soketi_error_code(client.trigger_batch(batch)) == 413
        assert client.trigger(channel, "marker", "end") == {"ok": True}
    sub.wait_for_events(channel, "marker")
    assert [e["event"] for e in sub.events(channel)] == [
        "pusher_internal:subscription_succeeded",
        "small",
        "marker",
    ]
    assert sub.events(channel, "small")[0]["data"] == small


def test_soketi_factory_applies_extra_env(soketi_factory: SoketiFactory) -> None:
    limited = soketi_factory(
        extra_env={"SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "1"},
        app_id="42",
        key="other-key",
        secret="other-secret",
    )
    assert limited.env() == {
        "PUSHER_APP_ID": "42",
        "PUSHER_KEY": "other-key",
        "PUSHER_SECRET": "other-secret",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(limited.port),
        "PUSHER_SSL": "false",
    }
    with pusher_for(limited) as client:
        codes = [soketi_error_code(client.trigger("rate", "tick", {})) for _ in range(3)]
    assert codes[0] is None
    assert 429 in codes


def test_subscriber_with_unknown_key_is_rejected(soketi: Soketi) -> None:
    with pytest.raises(ConnectionError, match="4001"):
        Subscriber(soketi.host, soketi.port, "no-such-key").close()


# --------------------------------------------------------------------- fault server


def test_fault_server_scripts_403_then_default(fault_server: FaultServer) -> None:
    fault_server.respond(403, "forbidden by test", times=1)
    with pusher_client(fault_server.host, fault_server.port, "7", "k", "s") as client:
        with pytest.raises(pusher.errors.PusherForbidden):
            client.trigger("chan", "ev", {"a": 1})
        assert client.trigger("chan", "ev", {"a": 2}) == {}
    assert [r.path for r in fault_server.requests] == ["/apps/7/events", "/apps/7/events"]
    assert fault_server.count("/apps/7/") == 2
    assert fault_server.count("/other") == 0
    first, second = fault_server.requests
    assert first.method == "POST"
    assert first.query["auth_key"] == "k"
    assert "auth_signature" in first.query
    assert first.header("content-type") == "application/json"
    assert first.json()["channels"] == ["chan"]
    assert second.json()["data"] == '{"a": 2}'
    fault_server.clear()
    assert fault_server.count() == 0


def test_fault_server_fifo_rules_then_new_default(fault_server: FaultServer) -> None:
    fault_server.respond(500, times=2)
    fault_server.respond(400, {"error": "bad"}, times=1)
    fault_server.respond(202, {"ok": True})  # new default
    statuses = []
    for _ in range(5):
        resp = requests.get(f"{fault_server.url}/x?y=1", timeout=5)
        statuses.append(resp.status_code)
        resp.close()
    assert statuses == [500, 500, 400, 202, 202]
    assert fault_server.requests[0].query == {"y": "1"}
    assert fault_server.requests[0].method == "GET"


def test_fault_server_delay_forces_client_timeout(fault_server: FaultServer) -> None:
    fault_server.respond(200, delay_s=5, times=1)
    with pusher_client(fault_server.host, fault_server.port, "1", "k", "s", timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout):
            client.trigger("chan", "ev", {})
        assert time.monotonic() - started < 3
        assert client.trigger("chan", "ev", {}) == {}
    assert fault_server.count() == 2
    started = time.monotonic()
    fault_server.close()  # must not wait for the sleeping handler
    assert time.monotonic() - started < 2


def test_fault_server_drop_closes_without_answer(fault_server: FaultServer) -> None:
    fault_server.respond(200, drop=True, times=1)
    with pusher_client(fault_server.host, fault_server.port, "1", "k", "s") as client:
        with pytest.raises(requests.exceptions.ConnectionError):
            client.trigger("chan", "ev", {})
        assert client.trigger("chan", "ev", {}) == {}


# --------------------------------------------------------------------- redis


def test_redis_is_private_and_flushed(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    assert redis_server.port != 6379
    assert redis_client.connection_pool.connection_kwargs["port"] == redis_server.port
    assert redis_client.dbsize() == 0  # flushed after every test
    redis_client.set("harness:key", "v")


def test_redis_stop_start_same_port(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    redis_client.set("before", "1")
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis_client.ping()
    redis_server.start()
    assert redis_server.port == port
    assert redis_client.ping() is True
    assert redis_client.get("before") is None  # no persistence
