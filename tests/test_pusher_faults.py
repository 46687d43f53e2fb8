"""The real ``pusher`` SDK against a local server answering with injected faults.

A real Pusher cluster cannot be made to run out of quota on demand, so a small local HTTP
server plays the API and answers 403 "over quota", 429, 5xx, 400, 401 or nothing at all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clock import FakeClock
from support.fault_server import FaultServer
from support.redis_keys import delete_prefixed
from support.servers import RedisServer
from support.workers import relaycast_cli, run_python

from broadcasters.backends import RedisBackend
from broadcasters.factory import build_manager
from broadcasters.packing import LogBatch
from config import load_settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "pusher-secret-do-not-print"
BATCH_EVENTS = "/apps/1/batch_events"


def _env(fault_server: FaultServer, **extra: str) -> dict[str, str]:
    return {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET,
            **fault_server.env(), "RELAYCAST_BROADCASTERS": "pusher,log",
            "RELAYCAST_FLAG_CACHE_MS": "0", "RELAYCAST_PROVIDER_TIMEOUT_S": "0.5", **extra}


def _batch(n: int, run_id: str = "run-1") -> LogBatch:
    return LogBatch(f"private-logs-{run_id}", run_id, [
        {"seq": i, "ts": i, "level": "info", "message": f"line {i}", "data": {}}
        for i in range(1, n + 1)])


def _log_requests(fault_server: FaultServer) -> int:
    """Requests carrying log lines (not the provider-changed announcements)."""
    return sum(1 for r in fault_server.requests if r.path == BATCH_EVENTS
               and any(e["name"] == "log" for e in r.json()["batch"]))


@pytest.fixture
def redis_state_env(redis_server: RedisServer) -> Iterator[dict[str, str]]:
    prefix = f"faults-{time.monotonic_ns()}:"
    yield {"REDIS_URL": redis_server.url, "RELAYCAST_STATE_PREFIX": prefix}
    store = RedisBackend.from_url(redis_server.url, prefix)
    delete_prefixed(store)
    store.client.close()


def test_over_quota_flags_pusher_for_every_worker_process(
    fault_server: FaultServer, redis_state_env: dict[str, str], tmp_path: Path
) -> None:
    fault_server.respond(403, "Over quota", times=1)
    env = _env(fault_server, **redis_state_env)
    manager = build_manager(load_settings(**env))
    report = manager.send([_batch(300)])
    assert fault_server.count(BATCH_EVENTS) == 1, "the quota answer stops this batch at once"
    assert {name for _, name in report.logged} == {"log"}, "lines went to the next broadcaster"
    assert report.next_chance_s is None, "no retry helps before the quota resets"
    flag = manager.state.flags(["pusher"])["pusher"]
    assert flag.reason.startswith("quota exceeded") and flag.until is not None

    other = run_python("tests/support/send_batch.py", "run-2", "200", env=env, cwd=REPO)
    assert other.returncode == 0, other.stderr
    summary = json.loads(other.stdout)
    assert fault_server.count(BATCH_EVENTS) == 1, "the other process made no request at all"
    assert summary["skipped"] == ["pusher"]
    assert summary["delivered"] == {"log": 200}


def test_the_quota_flag_lifts_by_itself_and_by_relaycast_enable(
    fault_server: FaultServer, redis_state_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(fault_server, RELAYCAST_QUOTA_DISABLE="1s", **redis_state_env)
    fault_server.respond(403, "Over quota", times=1)
    clock = FakeClock()
    manager = build_manager(load_settings(**env), clock=clock)
    manager.send([_batch(5)])
    assert manager.state.flags(["pusher"])["pusher"].until == clock.now + 1
    clock.advance(1.5)
    manager.send([_batch(5, "run-2")])
    assert _log_requests(fault_server) == 2, "after `until` pusher is tried again"

    fault_server.respond(403, "Over quota", times=1)
    manager.send([_batch(5, "run-3")])
    assert "pusher" in manager.state.flags(["pusher"])
    enabled = relaycast_cli("enable", "pusher", env=env, cwd=tmp_path)
    assert enabled.returncode == 0, enabled.stderr
    assert manager.state.flags(["pusher"]) == {}
    report = manager.send([_batch(5, "run-4")])
    assert {name for _, name in report.delivered} == {"pusher"}


def test_429_pauses_pusher_for_retry_after_and_moves_on(fault_server: FaultServer) -> None:
    fault_server.respond(429, "Too many requests", headers={"Retry-After": "2"}, times=1)
    manager = build_manager(load_settings(**_env(fault_server)))
    report = manager.send([_batch(5)])
    assert {name for _, name in report.logged} == {"log"}
    assert report.next_chance_s == pytest.approx(2, abs=0.5), "a retry helps after the pause"
    flag = manager.state.flags(["pusher"])["pusher"]
    assert flag.kind == "paused"
    assert flag.until == pytest.approx(time.time() + 2, abs=0.5)
    manager.send([_batch(5, "run-2")])
    assert fault_server.count(BATCH_EVENTS) == 1, "paused: no request"


@pytest.mark.parametrize(
    ("answer", "category"),
    [({"status": 500, "body": "Internal error"}, "transient"),
     ({"status": 503, "body": ""}, "transient"),
     ({"status": 200, "delay_s": 1.5}, "transient"),
     ({"status": 0, "drop": True}, "transient")],
    ids=["500", "503", "timeout", "connection-dropped"],
)
def test_server_errors_and_timeouts_are_retryable(
    fault_server: FaultServer, answer: dict[str, Any], category: str
) -> None:
    fault_server.respond(times=1, **answer)
    manager = build_manager(load_settings(**_env(fault_server, RELAYCAST_BROADCASTERS="pusher")))
    report = manager.send([_batch(25)])
    assert len(report.pending) == 1 and report.pending[0].seqs == (1, 25), "owed, to retry"
    assert {e.category for e in report.pending_errors.values()} == {category}
    assert manager.state.flags(["pusher"]) == {}
    retry = manager.send(report.pending)
    assert retry.pending == []
    assert {name for _, name in retry.delivered} == {"pusher"}


def test_400_is_not_retried(fault_server: FaultServer) -> None:
    fault_server.respond(400, "Invalid channel name", times=1)
    manager = build_manager(load_settings(**_env(fault_server)))
    report = manager.send([_batch(5)])
    assert report.pending == []
    assert [e.category for _, e in report.failed] == ["bad_request"]
    assert manager.state.flags(["pusher"]) == {}


def test_401_disables_pusher_with_credentials_rejected(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    fault_server.respond(401, "Invalid signature", times=1)
    manager = build_manager(load_settings(**_env(fault_server)))
    with caplog.at_level(logging.DEBUG):
        report = manager.send([_batch(5)])
    assert report.next_chance_s is None, "nothing is retried before an operator re-enables it"
    assert {name for _, name in report.logged} == {"log"}
    flag = manager.state.flags(["pusher"])["pusher"]
    assert (flag.reason, flag.until) == ("credentials rejected", None)
    assert "credentials rejected" in caplog.text
    assert SECRET not in caplog.text


def test_requests_carry_at_most_ten_events(fault_server: FaultServer) -> None:
    manager = build_manager(load_settings(**_env(fault_server, RELAYCAST_BROADCASTERS="pusher")))
    lines = [{"seq": i, "ts": i, "level": "info", "message": "x" * 3000, "data": {}}
             for i in range(1, 46)]
    report = manager.send([LogBatch("private-logs-r", "r", lines)])
    assert report.pending == []
    sizes = [len(r.json()["batch"]) for r in fault_server.requests]
    assert sizes and max(sizes) <= 10
    assert sum(sizes) == len(report.delivered)
    for request in fault_server.requests:
        for event in request.json()["batch"]:
            assert len(event["data"].encode()) <= 10_000


def test_status_and_disable_never_print_the_secret(
    fault_server: FaultServer, redis_state_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(fault_server, **redis_state_env)
    disabled = relaycast_cli("disable", "pusher", "--for", "1h", "--reason",
                    "maintenance", env=env, cwd=tmp_path)
    assert disabled.returncode == 0, disabled.stderr
    status = relaycast_cli("status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 1, "a disabled broadcaster is degraded"
    report = json.loads(status.stdout)
    pusher = next(b for b in report["broadcasters"] if b["name"] == "pusher")
    assert (pusher["state"], pusher["reason"]) == ("disabled", "maintenance")
    assert pusher["until"] == pytest.approx(time.time() + 3600, abs=30)
    table = relaycast_cli("status", env=env, cwd=tmp_path)
    assert "maintenance" in table.stdout and "degraded" in table.stdout
    for result in (disabled, status, table):
        assert SECRET not in result.stdout + result.stderr
