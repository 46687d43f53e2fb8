"""Alerts (``RELAYCAST_ALERT_WEBHOOK_URL``): which transitions alert, once each across every
worker (the shared state decides), signed, retried within a bound, and ``relaycast alert
test``. The webhook is a local threaded HTTP server recording what it receives
(``support.fault_server``). End to end with real workers and beat: test_alerts_pipeline.py."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.fault_server import FaultServer, RecordedRequest
from support.redis_keys import delete_prefixed
from support.servers import RedisServer
from support.workers import relaycast_cli

from broadcasters import keys
from broadcasters.alert_sink import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, verify
from broadcasters.alerts import alert_deadline_s, notify, transitions
from broadcasters.backends import MemoryBackend, RedisBackend
from broadcasters.flags import BroadcasterState
from broadcasters.state import SharedState
from broadcasters.status import BroadcasterHealth, HealthReport, PipelineHealth
from config import load_settings

SECRET = "alert-signing-secret-0123456789"
#: The webhook's path stands for a Slack-style token: it must never be printed.
TOKEN_PATH = "/services/T000/B000/not-to-be-printed"
DAY = 86_400.0
START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def _report(at: float, *, problems: tuple[str, ...] = (), pusher: str = "enabled",
            used: int = 0, quota: int = 1000, reason: str | None = None) -> HealthReport:
    rows = [
        BroadcasterHealth(name="pusher", state=BroadcasterState(pusher), reason=reason,
                          until=at + 3600 if pusher != "enabled" else None,
                          usage_today=used, daily_quota=quota,
                          quota_used_fraction=round(used / quota, 4)),
        BroadcasterHealth(name="log", state=BroadcasterState.ENABLED, live=False),
    ]
    return HealthReport(generated_at=at, interval_s=60, window_minutes=1, state_backend="test",
                        state_errors=0, active_broadcaster="pusher", broadcasters=rows,
                        pipeline=PipelineHealth(), problems=list(problems))


def _kinds(alerts: list[Any]) -> list[str]:
    return [str(alert.kind) for alert in alerts]


def _posted(sink: FaultServer) -> list[dict[str, Any]]:
    return [request.json() for request in sink.requests if request.method == "POST"]


def _settings(sink: FaultServer, **extra: str) -> Any:
    return load_settings(RELAYCAST_ALERT_WEBHOOK_URL=sink.url + TOKEN_PATH, **extra)


@pytest.fixture
def redis_state(redis_server: RedisServer) -> Iterator[str]:
    """A key prefix of our own on the private redis-server (emptied afterwards)."""
    prefix = f"alerts-{uuid.uuid4().hex[:8]}:"
    yield prefix
    backend = RedisBackend.from_url(redis_server.url, prefix)
    delete_prefixed(backend)
    backend.client.close()


# Which transitions alert ---------------------------------------------------------------------------

def test_each_transition_alerts_once_and_an_unchanged_state_never(shared_state: SharedState
                                                                   ) -> None:
    assert transitions(_report(START), shared_state) == [], "healthy, enabled, under 80 %"
    assert transitions(_report(START + 60), shared_state) == []

    down = _report(START + 120, problems=("pusher disabled: quota exceeded: Over quota",),
                   pusher="disabled", reason="quota exceeded: Over quota", used=400)
    alerts = transitions(down, shared_state)
    assert _kinds(alerts) == ["health_degraded", "broadcaster_disabled"]
    degraded, disabled = (alert.payload() for alert in alerts)
    assert degraded["relaycast"]["from"] == "healthy"
    assert degraded["relaycast"]["problems"] == ["pusher disabled: quota exceeded: Over quota"]
    assert degraded["text"] == "relaycast is degraded: pusher disabled: quota exceeded: Over quota"
    assert {k: disabled["relaycast"][k] for k in ("kind", "broadcaster", "from", "to", "reason")
            } == {"kind": "broadcaster_disabled", "broadcaster": "pusher", "from": "enabled",
                  "to": "disabled", "reason": "quota exceeded: Over quota"}
    assert disabled["relaycast"]["at"] == "2023-11-14T22:15:20.000Z"
    assert "pusher is disabled (quota exceeded: Over quota)" in disabled["text"]
    assert transitions(down.model_copy(update={"generated_at": START + 180}), shared_state) == []

    assert _kinds(transitions(_report(START + 240, used=400), shared_state)) == [
        "health_recovered", "broadcaster_enabled"]
    # Paused (seconds, after a rate limit) is not disabled: no broadcaster alert for it.
    assert transitions(_report(START + 250, pusher="paused", used=400), shared_state) == []

    warning = transitions(_report(START + 300, used=850), shared_state)
    assert _kinds(warning) == ["quota_warning"]
    fields = warning[0].payload()["relaycast"]
    assert (fields["from"], fields["to"], fields["usage_today"], fields["daily_quota"]) == (
        "0%", "80%", 850, 1000)
    assert "pusher has used 85% of its daily quota (850/1,000 messages today)" in warning[0].text
    assert transitions(_report(START + 360, used=990), shared_state) == [], "still over 80 %"
    assert _kinds(transitions(_report(START + 420, used=1000), shared_state)) == [
        "quota_exhausted"]
    assert transitions(_report(START + 480, used=500), shared_state) == [], "never downwards"
    # A new UTC day starts from nothing: crossing 80 % again is a new transition.
    assert _kinds(transitions(_report(START + DAY, used=800), shared_state)) == ["quota_warning"]


def test_a_first_observation_is_compared_with_the_normal_state(shared_state: SharedState) -> None:
    alerts = transitions(_report(START, problems=("a line has waited 300s to be broadcast",)),
                         shared_state)
    assert _kinds(alerts) == ["health_degraded"], "a deployment that starts degraded says so"


def test_an_older_observation_never_overrides_a_newer_one(shared_state: SharedState) -> None:
    degraded = _report(START + 10, problems=("x",))
    assert _kinds(transitions(degraded, shared_state)) == ["health_degraded"]
    # A health task that built its report before that one and reaches the state after it.
    assert transitions(_report(START + 5), shared_state) == []
    assert transitions(degraded.model_copy(update={"generated_at": START + 11}),
                       shared_state) == [], "the state is still degraded: nothing changed"


def test_with_the_shared_state_unreachable_nothing_is_decided_or_sent(
        fault_server: FaultServer) -> None:
    state = SharedState(RedisBackend.from_url("redis://127.0.0.1:1/0", "x:"))
    try:
        assert notify(_settings(fault_server), state, _report(START, problems=("x",))) == []
    finally:
        state.close()
    assert fault_server.requests == []
    assert state.errors == 1, "counted, and logged as the shared state's failures are"


# Once across workers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stamps", ["same", "staggered"])
def test_concurrent_senders_of_one_transition_post_it_once(
        redis_server: RedisServer, redis_state: str, fault_server: FaultServer, stamps: str
) -> None:
    """Eight health tasks (threads, each with its own Redis client, as worker processes have)
    observe the same change at once; the shared state lets exactly one send it. ``staggered``:
    each report built a moment apart, reaching Redis in any order."""
    settings = _settings(fault_server)
    senders = 8
    barrier = threading.Barrier(senders)
    sent: list[list[Any]] = []
    states = [SharedState(RedisBackend.from_url(redis_server.url, redis_state))
              for _ in range(senders)]

    def health_task(n: int) -> None:
        at = START + (n * 0.001 if stamps == "staggered" else 0.0)
        report = _report(at, problems=("pusher disabled: quota exceeded",), pusher="disabled",
                         reason="quota exceeded")
        barrier.wait()
        sent.append(notify(settings, states[n], report))

    threads = [threading.Thread(target=health_task, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for state in states:
        state.close()

    assert len(sent) == senders
    assert sorted(kind for alerts in sent for kind in _kinds(alerts)) == [
        "broadcaster_disabled", "health_degraded"]
    posted = _posted(fault_server)
    assert sorted(body["relaycast"]["kind"] for body in posted) == [
        "broadcaster_disabled", "health_degraded"], "one POST per transition"


def test_the_memory_state_decides_within_one_process(fault_server: FaultServer) -> None:
    state = SharedState(MemoryBackend())
    report = _report(START, problems=("x",))
    barrier = threading.Barrier(4)

    def health_task() -> None:
        barrier.wait()
        notify(_settings(fault_server), state, report)

    threads = [threading.Thread(target=health_task) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [body["relaycast"]["kind"] for body in _posted(fault_server)] == ["health_degraded"]


# The POST: body, signature, retries --------------------------------------------------------------

def _signed_material(request: RecordedRequest) -> tuple[str, str]:
    timestamp = request.header(TIMESTAMP_HEADER)
    signature = request.header(SIGNATURE_HEADER)
    assert timestamp is not None and signature is not None
    return timestamp, signature


def test_an_alert_is_slack_shaped_and_its_hmac_signature_verifies_with_the_secret(
        fault_server: FaultServer) -> None:
    settings = _settings(fault_server, RELAYCAST_ALERT_SECRET=SECRET)
    notify(settings, SharedState(MemoryBackend()), _report(time.time(), problems=("x",)))

    (request,) = fault_server.requests
    assert (request.method, request.path) == ("POST", TOKEN_PATH)
    assert request.header("Content-Type") == "application/json"
    body = request.json()
    assert body["text"] == "relaycast is degraded: x", "Slack shows `text`"
    assert body["relaycast"]["kind"] == "health_degraded"
    timestamp, signature = _signed_material(request)
    # What a receiver computes over the raw body, independently of relaycast's code:
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert abs(int(timestamp) - time.time()) < 60
    assert verify(SECRET, request.body, request.headers)
    assert not verify("another-secret", request.body, request.headers)
    assert not verify(SECRET, request.body.replace(b"degraded", b"healthy"), request.headers)
    assert not verify(SECRET, request.body, request.headers, now=int(timestamp) + 301), (
        "a replayed request, five minutes later, is refused")


def test_without_a_secret_alerts_are_unsigned(fault_server: FaultServer) -> None:
    notify(_settings(fault_server), SharedState(MemoryBackend()), _report(START, problems=("x",)))
    (request,) = fault_server.requests
    assert request.header(SIGNATURE_HEADER) is None
    assert request.header(TIMESTAMP_HEADER) is None


def test_a_failing_sink_is_retried_with_backoff_then_given_up(
        fault_server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    fault_server.respond(500, "internal error")
    state = SharedState(MemoryBackend())
    sink = WebhookSink(fault_server.url + TOKEN_PATH, SECRET, timeout_s=2,
                       backoff_base_s=0.2, backoff_max_s=2)
    settings = _settings(fault_server, RELAYCAST_ALERT_SECRET=SECRET)
    with caplog.at_level("INFO", logger="broadcasters.alerts"):
        alerts = notify(settings, state, _report(time.time(), problems=("x",)), sink=sink)

    assert _kinds(alerts) == ["health_degraded"]
    requests = fault_server.requests
    assert len(requests) == 3, "the first attempt and two retries, then given up"
    assert len({r.body for r in requests}) == 1, "the same alert (same id) every time"
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    # compute_backoff: 0.2 s then 0.4 s, the last half of each random.
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "alert NOT sent" in record.getMessage() and "HTTP 500" in record.getMessage()
    assert TOKEN_PATH not in caplog.text and SECRET not in caplog.text
    counts = state.pipeline_counts(5)
    assert (counts.get(keys.PipelineCounter.ALERTS_SENT, 0),
            counts.get(keys.PipelineCounter.ALERTS_FAILED)) == (0, 1)


def test_a_sink_that_refuses_the_request_is_not_retried(fault_server: FaultServer) -> None:
    fault_server.respond(404, "no_service")
    delivery = WebhookSink(fault_server.url + TOKEN_PATH).deliver(b"{}")
    assert (delivery.ok, delivery.attempts, delivery.reason) == (False, 1, "HTTP 404: no_service")
    assert fault_server.count() == 1


def test_a_dead_sink_holds_the_health_task_for_a_bounded_time(fault_server: FaultServer) -> None:
    """A sink that accepts connections and never answers: each request gives up after the
    provider timeout, and one report's alerts share one deadline."""
    fault_server.respond(200, "{}", delay_s=60)
    settings = _settings(fault_server, RELAYCAST_PROVIDER_TIMEOUT_S="0.3")
    report = _report(time.time(), problems=("x",), pusher="disabled", reason="off")
    started = time.monotonic()
    alerts = notify(settings, SharedState(MemoryBackend()), report)
    elapsed = time.monotonic() - started
    assert _kinds(alerts) == ["health_degraded", "broadcaster_disabled"]
    assert alert_deadline_s(settings) == pytest.approx(2.9)
    # The bound is the code's (3 timeouts and the backoff); the margin is for a loaded machine.
    assert elapsed < 3 * alert_deadline_s(settings), elapsed
    assert 1 <= fault_server.count() <= 6


# relaycast alert test ------------------------------------------------------------------------------

def test_relaycast_alert_test_exits_0_when_the_webhook_takes_it(fault_server: FaultServer) -> None:
    env = {"RELAYCAST_ALERT_WEBHOOK_URL": fault_server.url + TOKEN_PATH,
           "RELAYCAST_ALERT_SECRET": SECRET}
    result = relaycast_cli("alert", "test", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"test alert sent to {fault_server.url}/… (signed): HTTP 200")
    (request,) = fault_server.requests
    body = request.json()
    assert body["relaycast"]["kind"] == "test"
    assert body["text"].startswith("relaycast: test alert from ")
    assert verify(SECRET, request.body, request.headers)
    assert TOKEN_PATH not in result.stdout + result.stderr


def test_relaycast_alert_test_exits_1_with_one_line_when_the_webhook_fails(
        fault_server: FaultServer) -> None:
    fault_server.respond(500, "<html>\n<body>upstream exploded</body>\n</html>")
    env = {"RELAYCAST_ALERT_WEBHOOK_URL": fault_server.url + TOKEN_PATH}
    result = relaycast_cli("alert", "test", env=env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"relaycast: alert webhook {fault_server.url}/… did not take the test alert: "
                    "HTTP 500: <html> <body>upstream exploded</body> </html>")
    assert fault_server.count() == 1, "one try: the answer is the webhook's own"
    assert TOKEN_PATH not in result.stderr

    fault_server.close()  # nothing listens there any more
    unreachable = relaycast_cli("alert", "test", env=env)
    assert unreachable.returncode == 1
    assert "cannot connect (ConnectionRefusedError" in unreachable.stderr


def test_relaycast_alert_test_without_a_webhook_says_what_to_set() -> None:
    result = relaycast_cli("alert", "test", env={})
    assert result.returncode == 2
    assert "RELAYCAST_ALERT_WEBHOOK_URL" in result.stderr


def test_the_body_is_json_with_the_structured_fields() -> None:
    state = SharedState(MemoryBackend())
    (alert,) = transitions(_report(START, used=900), state)
    payload = json.loads(alert.body())
    assert payload == alert.payload()
    assert set(payload) == {"text", "relaycast"}
    assert payload["relaycast"]["id"] == f"quota_warning:pusher:{int(START * 1000)}"
