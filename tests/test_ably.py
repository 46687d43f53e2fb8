"""The real ``ably`` SDK (its synchronous REST client) against a local Ably-like server.

Nothing here reaches the internet: the client is pointed at ``support.ably_server`` with
ABLY_REST_HOST/ABLY_REST_PORT, and a custom host gets no fallback hosts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import closing

import pytest
from support.ably_server import AblyMessage, AblyServer
from support.clock import FakeClock
from support.fault_server import FaultServer

from broadcasters.ably import AblyBroadcaster, ably_client
from broadcasters.base import Message
from broadcasters.errors import RateLimited
from broadcasters.factory import build_broadcaster, build_manager
from broadcasters.packing import LogBatch
from broadcasters.wire import LOG_EVENT
from config import Settings, load_settings

KEY_NAME = "appid.keyid"
SECRET = "SECRETPART"
ABLY_KEY = f"{KEY_NAME}:{SECRET}"


@pytest.fixture
def ably_server() -> Iterator[AblyServer]:
    with AblyServer(key=ABLY_KEY) as server:
        yield server


def _env(server: AblyServer, **extra: str) -> dict[str, str]:
    return {"ABLY_API_KEY": ABLY_KEY, **server.env(), "RELAYCAST_BROADCASTERS": "ably",
            "RELAYCAST_FLAG_CACHE_MS": "0", "RELAYCAST_PROVIDER_TIMEOUT_S": "0.5", **extra}


def _settings(server: AblyServer, **extra: str) -> Settings:
    return load_settings(**_env(server, **extra))


@pytest.fixture
def broadcaster(ably_server: AblyServer) -> Iterator[AblyBroadcaster]:
    made = build_broadcaster("ably", _settings(ably_server, RELAYCAST_RATE_LIMIT_PAUSE_S="3"))
    assert isinstance(made, AblyBroadcaster)
    try:
        yield made
    finally:
        made.close()


def _batch(n: int, run_id: str = "run-1", text: str = "line") -> LogBatch:
    return LogBatch(f"private-logs-{run_id}", run_id, [
        {"seq": i, "ts": 1_700_000_000_000 + i, "level": "info", "message": f"{text} {i}",
         "data": {"i": i}}
        for i in range(1, n + 1)])


def _seqs(messages: list[AblyMessage]) -> list[int]:
    return [event["seq"] for m in messages for event in m.decoded()["events"]]


# Delivery ------------------------------------------------------------------------------------


def test_a_batch_reaches_ably_as_one_publish_per_channel(
    ably_server: AblyServer, broadcaster: AblyBroadcaster
) -> None:
    sent = [*_batch(40, "run-a").pack(800), *_batch(30, "run-b").pack(800)]
    assert len({m.channel for m in sent}) == 2 and len(sent) > 4
    result = broadcaster.send(sent)
    assert result.delivered == sent and not result.failed

    publishes = ably_server.publishes
    assert [r.channel for r in publishes] == ["private-logs-run-a", "private-logs-run-b"]
    assert all(r.status == 201 for r in publishes)
    for request in publishes:
        assert isinstance(json.loads(request.body), list), "the channel's messages go in one list"
    received = ably_server.messages
    assert [m.id for m in received] == [m.id for m in sent]
    for original, got in zip(sent, received, strict=True):
        assert got.channel == original.channel
        assert got.name == LOG_EVENT
        assert got.encoding == "json"
        assert got.data == original.payload, "the payload goes out as it was sized, byte for byte"
        assert got.decoded() == json.loads(original.payload)
    assert received[0].id == "run-a:1-" + str(json.loads(sent[0].payload)["events"][-1]["seq"])
    assert _seqs([m for m in received if m.channel.endswith("run-a")]) == list(range(1, 41))
    assert _seqs([m for m in received if m.channel.endswith("run-b")]) == list(range(1, 31))


def test_a_single_message_is_published_and_decodes_to_the_pusher_object(
    ably_server: AblyServer, broadcaster: AblyBroadcaster
) -> None:
    data = {"kind": "status", "text": "naïve café ☕ 🚀", "n": [1, 2.5, None, True]}
    message = Message.from_data("private-admin", "status", data, "admin:7")
    assert broadcaster.send([message]).delivered == [message]
    (request,) = ably_server.publishes
    body = json.loads(request.body)
    assert isinstance(body, dict), "the SDK sends one message as an object, not a list"
    assert (body["name"], body["id"], body["encoding"]) == ("status", "admin:7", "json")
    (got,) = ably_server.messages
    assert got.decoded() == data == message.data


def test_messages_over_the_per_publish_limit_are_split_not_refused(
    ably_server: AblyServer, broadcaster: AblyBroadcaster
) -> None:
    """Ably's 64 KiB is for everything one publish carries: big messages go in several."""
    batch = _batch(240, "big", text="é" * 600)  # ~170 KB of log lines, non-ASCII
    messages = batch.pack(broadcaster.max_message_bytes)
    assert len(messages) >= 3 and all(m.size_bytes <= 65_000 for m in messages)
    result = broadcaster.send(messages)
    assert not result.failed
    assert len(ably_server.publishes) == len(messages)
    assert all(r.status == 201 for r in ably_server.publishes)
    assert _seqs(ably_server.messages) == list(range(1, 241))


def test_requests_go_to_the_configured_host_only_with_the_key_never_on_the_wire(
    ably_server: AblyServer,
) -> None:
    settings = _settings(ably_server)
    client = ably_client(settings)
    try:
        assert client.options.get_hosts() == ["127.0.0.1"], "no fallback hosts"
        assert client.options.use_binary_protocol is False
    finally:
        client.close()
    ably_server.respond_error(503, 50300, "unavailable", times=1)
    with closing(AblyBroadcaster.from_settings(settings)) as broadcaster:
        result = broadcaster.send(_batch(3).pack(65_000))
    assert [e.category for _, e in result.failed] == ["transient"]
    assert len(ably_server.publishes) == 1, "a 503 is not retried on any other host"
    for request in ably_server.requests:
        assert SECRET not in request.body.decode() + json.dumps(request.headers)
    assert ably_server.token_requests, "without TLS the SDK authenticates with a signed token request"


# Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "category"),
    [(401, 40112, "quota"), (401, 40101, "auth"), (401, 40160, "auth"), (403, 40300, "auth"),
     (429, 42910, "rate_limited"), (429, 42913, "rate_limited"), (413, 40009, "too_large"),
     (400, 40000, "bad_request"), (404, 40400, "bad_request"), (500, 50000, "transient"),
     (503, 50300, "transient")],
)
def test_ably_error_codes_map_to_the_taxonomy(
    ably_server: AblyServer, broadcaster: AblyBroadcaster, status: int, code: int, category: str
) -> None:
    ably_server.respond_error(status, code, f"scripted {code}", times=1)
    result = broadcaster.send(_batch(5).pack(65_000))
    assert not result.delivered
    errors = [error for _, error in result.failed]
    assert errors and {e.category for e in errors} == {category}
    assert errors[0].status == status
    assert str(code) in errors[0].detail
    if isinstance(errors[0], RateLimited):
        assert errors[0].retry_after_s == 3.0, "the SDK keeps no Retry-After: the settings' pause"
    assert len(ably_server.publishes) == 1


def test_an_expired_token_is_renewed_once_by_the_sdk_then_auth(
    ably_server: AblyServer, broadcaster: AblyBroadcaster
) -> None:
    ably_server.respond_error(401, 40140, "token expired")
    result = broadcaster.send(_batch(5).pack(65_000))
    assert {e.category for _, e in result.failed} == {"auth"}
    assert len(ably_server.publishes) == 2, "the SDK asks for a new token and retries once"
    assert len(ably_server.token_requests) == 2
    ably_server.reset_rules()
    ably_server.respond_error(401, 40140, "token expired", times=1)
    assert not broadcaster.send(_batch(5).pack(65_000)).failed, "a renewed token goes through"


def test_errors_without_an_ably_body_are_classified_by_status(
    ably_server: AblyServer, broadcaster: AblyBroadcaster
) -> None:
    ably_server.respond_error(502, 0, "", times=1, raw_body=b"<html>Bad gateway</html>")
    ably_server.respond_error(429, 0, "", times=1, raw_body=b"slow down")
    first = broadcaster.send(_batch(2).pack(65_000))
    second = broadcaster.send(_batch(2).pack(65_000))
    assert [e.category for _, e in first.failed] == ["transient"]
    assert [e.category for _, e in second.failed] == ["rate_limited"]


def test_a_timeout_is_transient(ably_server: AblyServer, broadcaster: AblyBroadcaster) -> None:
    # The server would answer (a success) after 5 s; RELAYCAST_PROVIDER_TIMEOUT_S (0.5 s)
    # ends the request first, so the send reports a timeout instead of that success.
    ably_server.respond_delay(5.0, times=1)
    result = broadcaster.send(_batch(5).pack(65_000))
    assert result.delivered == []
    assert {e.category for _, e in result.failed} == {"transient"}
    assert "Timeout" in result.failed[0][1].detail
    assert len(ably_server.wait_for_publishes(1)) == 1


def test_a_refused_connection_is_transient() -> None:
    with AblyServer(key=ABLY_KEY) as gone:
        settings = _settings(gone)
    with closing(AblyBroadcaster.from_settings(settings)) as broadcaster:
        result = broadcaster.send(_batch(2).pack(65_000))
    assert {e.category for _, e in result.failed} == {"transient"}


def test_a_retried_batch_reuses_the_same_ids(ably_server: AblyServer) -> None:
    ably_server.respond_error(500, 50000, "internal error", times=1)
    manager = build_manager(_settings(ably_server))
    try:
        report = manager.send([_batch(120, text="x" * 400)])
        assert [e["seq"] for m in report.pending for e in json.loads(m.payload)["events"]] == (
            list(range(1, 121))), "every line owed, to retry"
        assert {e.category for e in report.pending_errors.values()} == {"transient"}
        assert manager.state.flags(["ably"]) == {}
        retry = manager.send(report.pending)
    finally:
        manager.close()
    assert retry.pending == []
    assert {name for _, name in retry.delivered} == {"ably"}
    failed, *retried = ably_server.publishes
    assert failed.status == 500
    assert [i for r in retried for i in r.ids] == [m.id for m in report.pending]
    assert set(failed.ids) <= {m.id for m in report.pending}
    assert _seqs(ably_server.messages) == list(range(1, 121))


# Fallback from Pusher ------------------------------------------------------------------------


def test_over_quota_pusher_falls_back_to_ably_and_comes_back_when_the_flag_lifts(
    ably_server: AblyServer, fault_server: FaultServer
) -> None:
    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": "pusher-secret",
           **fault_server.env(), **_env(ably_server), "RELAYCAST_BROADCASTERS": "pusher,ably",
           "RELAYCAST_QUOTA_DISABLE": "1s"}
    fault_server.respond(403, "Over quota", times=1)
    clock = FakeClock()
    manager = build_manager(load_settings(**env), clock=clock)
    try:
        report = manager.send([_batch(300, "run-1", text="y" * 300)])
        assert fault_server.count("/apps/1/batch_events") == 1
        assert report.pending == []
        assert {name for _, name in report.delivered} == {"ably"}
        assert manager.state.flags(["pusher"])["pusher"].reason.startswith("quota exceeded")
        received = ably_server.messages
        logs = [m for m in received if m.channel == "private-logs-run-1"]
        assert _seqs(logs) == list(range(1, 301)), "every line, in order, exactly once"
        for message in logs:
            seqs = [e["seq"] for e in message.decoded()["events"]]
            assert message.id == f"run-1:{seqs[0]}-{seqs[-1]}"
        assert [m.id for m in logs] == [m.id for m, _ in report.delivered]

        assert manager.state.flags(["pusher"])["pusher"].until == clock.now + 1
        clock.advance(1.5)  # RELAYCAST_QUOTA_DISABLE=1s later
        again = manager.send([_batch(5, "run-2")])
    finally:
        manager.close()
    assert {name for _, name in again.delivered} == {"pusher"}
    pusher_channels = {event["channel"] for request in fault_server.requests[1:]
                       for event in request.json()["batch"]}
    assert "private-logs-run-2" in pusher_channels, "after the flag lifts pusher is tried again"
    later = ably_server.messages[len(received):]
    assert ably_server.messages[:len(received)] == received
    assert [(m.channel, m.name) for m in later] == [("private-admin-events", "provider-changed")], (
        "Ably got no more lines: only the news, for browsers still listening there")
    assert (later[0].decoded()["from"], later[0].decoded()["to"]) == ("ably", "pusher")


# Secrets -------------------------------------------------------------------------------------


def test_the_key_secret_never_reaches_the_logs(
    ably_server: AblyServer, caplog: pytest.LogCaptureFixture
) -> None:
    ably_server.respond_error(401, 40112, "Account limit exceeded", times=1)
    with caplog.at_level(logging.DEBUG):
        manager = build_manager(_settings(ably_server, RELAYCAST_BROADCASTERS="ably,log"))
        try:
            first = manager.send([_batch(5)])
            manager.state.enable("ably")
            second = manager.send([_batch(5, "run-2")])
        finally:
            manager.close()
    assert {name for _, name in first.logged} == {"log"}, "log took it; still owed to Ably"
    assert {name for _, name in second.delivered} == {"ably"}
    assert "quota" in caplog.text
    assert "Auth options: [redacted by relaycast]" in caplog.text, "the SDK's leaky line was hit"
    assert SECRET not in caplog.text
    assert "token-1" not in caplog.text


def test_basic_auth_over_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production path: TLS, the key as basic auth, ABLY_REST_PORT as the TLS port."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("required for this test but missing in CI: openssl")
        pytest.skip("missing: openssl")
    with AblyServer(key=ABLY_KEY, tls=True) as server:
        assert server.ca_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)  # read by httpx when the client is made
        with closing(AblyBroadcaster.from_settings(_settings(server))) as broadcaster:
            sent = _batch(3).pack(65_000)
            result = broadcaster.send(sent)
        assert result.delivered == sent
        assert not server.token_requests
        (request,) = server.publishes
        assert request.header("Authorization") == "Basic " + _b64(ABLY_KEY)
        assert [m.id for m in server.messages] == [m.id for m in sent]


# Helpers ---------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
