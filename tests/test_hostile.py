"""What a careless or hostile user tries: no line lost, no door open, every wrong answer a
one-line error with the right exit status.

Real worker, soketi, Redis, both databases, the CLI and the API as subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
from support.pusher_ws import Subscriber
from support.runs import has_lines, run_env, seqs_received, start_run
from support.seeding import seed_lines
from support.servers import RedisServer, Soketi, free_port
from support.workers import (
    CeleryBeat,
    CeleryWorker,
    ForwardingProxy,
    Started,
    one_line_error,
    project_env,
    relaycast_cli,
    run_python,
)

from workflows.models import LineState
from workflows.store import LogStore

SubscriberFactory = Callable[..., Subscriber]
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


# Wrong answers, now one line each ---------------------------------------------------------------


@pytest.mark.parametrize("argv", [["disable", "pusher"], ["disable", "pusher", "--for", "1h"],
                                  ["enable", "pusher"]])
def test_changing_a_flag_with_redis_unreachable_fails_and_says_nothing_changed(
        argv: list[str]) -> None:
    result = relaycast_cli(*argv, env={"REDIS_URL": UNREACHABLE_REDIS})
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line_error(result)
    assert "unreachable" in line and "nothing was changed" in line


@pytest.mark.parametrize(("params", "says"), [
    (["run_id=someone-elses-run"], "run_id is set by relaycast"),
    (["run_id=bad id!"], "run_id is set by relaycast"),
    (["stepz=3"], "workflow 'agent' takes no parameter 'stepz'"),
    (["steps=many"], "steps must be int"),
    (["steps=true"], "steps must be int"),
])
def test_run_refuses_parameters_the_workflow_cannot_take(params: list[str], says: str) -> None:
    argv = ["run", "agent"]
    for param in params:
        argv += ["--param", param]
    result = relaycast_cli(*argv, env={"CELERY_BROKER_URL": UNREACHABLE_REDIS})
    assert result.returncode == 2, "refused where it is given, before anything is enqueued"
    assert says in one_line_error(result)


def test_run_with_the_broker_unreachable_says_the_run_was_not_enqueued() -> None:
    result = relaycast_cli("run", "agent", env={"CELERY_BROKER_URL": UNREACHABLE_REDIS},
                           timeout_s=60)
    assert result.returncode == 1
    assert "the run was not enqueued" in one_line_error(result)


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["status"], {"REDIS_URL": "nonsense"}, "REDIS_URL"),
    (["logs", "etl-1"], {"DATABASE_URL": "garbage"}, "DATABASE_URL: not a database URL"),
    (["logs", "etl-1"], {"DATABASE_URL": "mysql://u@db/x"}, "mysql is not supported"),
    (["logs", "etl-1"], {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"},
     "database unavailable at DATABASE_URL: OperationalError: connection"),
    (["disable", "log", "--for", "99999999999d"], {}, "duration too long"),
    (["api", "--port", "99999"], {}, "port 99999 is out of range"),
    (["logs", "bad id!"], {}, "invalid run id 'bad id!'"),
    (["logs", "etl-1", "--after", "9223372036854775808"], {}, "is not a line number"),
])
def test_every_mistake_is_one_line_naming_what_is_wrong(
        argv: list[str], env: dict[str, str], says: str) -> None:
    result = relaycast_cli(*argv, env=env)
    assert result.returncode in (1, 2)
    line = one_line_error(result)
    assert says in line
    assert "Wraps a DB-API" not in line and "No module named" not in line


def test_logs_piped_into_head_stops_quietly(sqlite_url: str) -> None:
    store = LogStore.from_url(sqlite_url)
    seed_lines(store, [{"run_id": "long", "seq": i, "ts": i, "level": "info",
                        "message": f"line {i} " + "x" * 100, "data": {}} for i in range(1, 5001)])
    store.close()
    with subprocess.Popen([sys.executable, "-m", "relaycast", "logs", "long"],
                          env=project_env({"DATABASE_URL": sqlite_url}),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does after its line
        status = process.wait(timeout=60)
        errors = process.stderr.read()
    assert first.split()[0] == "1"
    assert errors == "", "no error: the reader simply went away"
    assert status == 141


# Open doors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "short", "change-me"])
def test_the_api_will_not_start_with_an_empty_short_or_example_token(token: str) -> None:
    result = relaycast_cli("api", "--port", str(free_port()), env={"RELAYCAST_ADMIN_TOKEN": token},
                           timeout_s=30)
    assert result.returncode == 2
    assert "RELAYCAST_ADMIN_TOKEN" in one_line_error(result)


@pytest.mark.parametrize("prefix", ["", "public-", "presence-"])
def test_a_prefix_that_would_make_channels_public_stops_every_process(prefix: str) -> None:
    for argv in (["status"], ["api"]):
        result = relaycast_cli(*argv, env={"RELAYCAST_CHANNEL_PREFIX": prefix}, timeout_s=30)
        assert result.returncode == 2
        assert "RELAYCAST_CHANNEL_PREFIX: must start with 'private-'" in one_line_error(result)
    worker = run_python("-m", "celery", "-A", "tasks", "report",
                        env={"RELAYCAST_CHANNEL_PREFIX": prefix})
    assert worker.returncode == 2 and "RELAYCAST_CHANNEL_PREFIX" in worker.stderr


# No silent loss ---------------------------------------------------------------------------------

_EMIT_SCRIPT = """
import os, sys
import tasks.celery_app  # wires this process's emitter to the broadcast queue
from workflows.log_stream import LogStream

a, b, c = sys.argv[1:4]
LogStream(a).info("processing file", path=os.fsdecode(b"/data/report-\\xff.csv"))
for i in range(5):
    LogStream(b).info(f"normal {i}")
    LogStream(c).info(f"normal {i}")
assert LogStream(a).flush(30), "stored and enqueued"
"""


@pytest.mark.timeout(180)
def test_a_file_name_that_is_not_utf8_takes_no_line_with_it(
    broker: str, database_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    env = run_env(broker, database_url, **soketi.env(), RELAYCAST_SWEEP_INTERVAL_S="0.5",
                  RELAYCAST_SWEEP_AFTER_S="1", RELAYCAST_ADMIN_TOKEN="t" * 24)
    runs = [f"fsname-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    subscriber = subscriber_factory()
    for run_id in runs:
        subscriber.subscribe(f"private-logs-{run_id}")
    worker, beat = CeleryWorker(env, queues="broadcast", concurrency=1), CeleryBeat(env)
    workers.start(worker, beat)
    emitted = run_python("-c", _EMIT_SCRIPT, *runs, env=env, timeout_s=60)
    assert emitted.returncode == 0, emitted.stderr
    for run_id, count in zip(runs, (1, 5, 5), strict=True):
        channel = f"private-logs-{run_id}"
        subscriber.wait_for(has_lines(subscriber, channel, count), timeout_s=30)
    [line] = [e["data"]["events"][0] for e in subscriber.events(f"private-logs-{runs[0]}", "log")]
    assert line["data"] == {"path": "/data/report-\\xff.csv"}, "the byte it stood for, kept"
    store = open_store(database_url)
    time.sleep(3)  # several sweeps: nothing is left pending to fail again
    assert store.broadcast_counts(runs) == {(LineState.SENT, "pusher"): 11}
    api_port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "relaycast", "api", "--port", str(api_port)],
                           env=project_env(env), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{api_port}"
        _wait_http(url + "/healthz")
        for run_id in runs:
            answer = requests.get(f"{url}/runs/{run_id}/logs", timeout=10,
                                  headers={"Authorization": "Bearer " + "t" * 24})
            assert answer.status_code == 200
            assert answer.json()["events"]
    finally:
        api.terminate()
        api.wait(timeout=10)


def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture
def restartable_soketi() -> Iterator[Soketi]:
    """A soketi on a fixed port, so that it can be stopped and started again."""
    server = Soketi(port=free_port(), extra_env={"SOKETI_EVENT_MAX_SIZE_IN_KB": "10"})
    server.start()
    yield server
    server.close()


def _status(env: dict[str, str]) -> int:
    return relaycast_cli("status", env=env, timeout_s=30).returncode


@pytest.mark.timeout(240)
def test_an_outage_under_the_default_order_is_made_good_when_the_provider_returns(
    redis_server: RedisServer, sqlite_url: str, restartable_soketi: Soketi,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    """Pusher, then log (the default order): log takes what Pusher cannot, but the lines stay
    owed to Pusher and reach a subscriber once it is back."""
    soketi = restartable_soketi
    proxy = ForwardingProxy(soketi.url)
    try:
        env = run_env(redis_server.url, sqlite_url,
                      **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                      RELAYCAST_HEALTH_INTERVAL_S="1", RELAYCAST_RETRY_BACKOFF_MAX_S="4",
                      RELAYCAST_BROADCAST_MAX_RETRIES="20")
        assert "RELAYCAST_BROADCASTERS" not in env, "the default order: pusher, then log"
        worker = CeleryWorker(env, concurrency=2)
        beat = CeleryBeat(env)
        workers.start(worker, beat)
        run_id = f"outage-{uuid.uuid4().hex[:6]}"
        channel = f"private-logs-{run_id}"
        before = Subscriber(soketi.host, soketi.port, soketi.key, soketi.secret)
        before.subscribe(channel)
        start_run(env, "burst", run_id, lines=2500, delay_ms=10)
        before.wait_for(lambda _: len(seqs_received(before, channel)) > 300, timeout_s=60)
        assert _status(env) == 0, "healthy before the outage"
        proxy.down = True  # the provider answers nothing: soketi is stopped behind it
        soketi.stop()
        got_before = set(seqs_received(before, channel))
        before.close()
        time.sleep(4)
        during = relaycast_cli("status", env=env, timeout_s=30)
        assert during.returncode == 1, during.stdout
        assert "pusher failing since" in during.stdout or "traffic is on log" in during.stdout
        time.sleep(11)  # 15 s in all
        soketi.start()
        after = Subscriber(soketi.host, soketi.port, soketi.key, soketi.secret)
        after.subscribe(channel)  # reconnected before the provider takes requests again
        proxy.down = False
        after.wait_for(lambda _: got_before | set(seqs_received(after, channel))
                       >= set(range(1, 2501)), timeout_s=120)
        store = open_store(sqlite_url)
        deadline = time.monotonic() + 30
        while store.broadcast_counts([run_id]).get((LineState.SENT, "pusher"), 0) < 2500:
            assert time.monotonic() < deadline, store.broadcast_counts([run_id])
            time.sleep(0.5)
        assert store.broadcast_counts([run_id]) == {(LineState.SENT, "pusher"): 2500}, (
            "what log took during the outage was owed to Pusher, and Pusher carried it")
        after.close()
    finally:
        proxy.close()


def test_status_counts_a_run_of_traffic_on_log_as_degraded(
        redis_server: RedisServer, sqlite_url: str) -> None:
    """No live broadcaster delivering while one is configured is what an operator calls degraded."""
    from broadcasters.factory import build_manager
    from broadcasters.wire import Channels
    from config import load_settings
    from tasks.reporting import current_report

    env = run_env(redis_server.url, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY="k",
                  PUSHER_SECRET="s", PUSHER_HOST="127.0.0.1", PUSHER_PORT=str(free_port()),
                  PUSHER_SSL="false", RELAYCAST_PROVIDER_TIMEOUT_S="0.5")
    settings = load_settings(**env)
    manager = build_manager(settings)
    try:
        from broadcasters.base import Message

        report = manager.send([Message.from_data(Channels().admin_events, "x", {}, "m1")])
        assert [name for _, name in report.logged] == ["log"]
        health = current_report(settings, manager.state)
        problems = " | ".join(health.problems)
        assert "pusher failing since" in problems
        assert "traffic is on log" in problems
        assert not health.healthy
    finally:
        manager.close()
        manager.state.close()
