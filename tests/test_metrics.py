"""``GET /metrics`` (relaycast/api/metrics.py): what a real Prometheus parser reads after runs
through a real Celery worker and soketi matches ``relaycast status --json`` and SQL; the token
guards it unless ``RELAYCAST_METRICS_PUBLIC=true``; the alert rules and the dashboard name
only metrics it exposes."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.api import ApiServer
from support.clock import FakeClock
from support.pusher_ws import Subscriber
from support.runs import run_env, start_run, subscribe, wait_for_lines
from support.servers import Soketi
from support.workers import CeleryWorker, Started, relaycast_cli, run_python

from broadcasters.backends import MemoryBackend, RedisBackend
from broadcasters.keys import PipelineCounter
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState, counts_from_send
from config import load_settings
from relaycast.api.metrics import build_registry
from workflows.models import RunStatus
from workflows.store import LogStore

REPO = Path(__file__).resolve().parents[1]
TOKEN = "metrics-test-token-0123456789"
SubscriberFactory = Callable[..., Subscriber]
#: {sample name: {frozenset(labels): value}}, and {family name: type}.
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]

APP_EVENTS = '''
import tasks.celery_app  # wires this process's emitter to the broadcast queue
from workflows.app_events import broadcast
from workflows.process import get_emitter

for i in range(10):
    broadcast("metrics-app", "progress", {"i": i})
assert get_emitter().flush(120)
'''


def scrape(api: ApiServer, headers: dict[str, str] | None = None
           ) -> tuple[Samples, dict[str, str]]:
    answer = requests.get(api.url + "/metrics", headers=headers or {}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(answer.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_metrics_after_real_runs_match_status_and_sql(
    broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path,
    closing: list[Any],
) -> None:
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher,log",
                  RELAYCAST_OCCUPANCY="webhooks", RELAYCAST_OCCUPANCY_RECONCILE_S="3600")
    watched, unwatched = (f"m-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("seen", "unseen"))
    backend = RedisBackend.from_url(broker, env["RELAYCAST_STATE_PREFIX"])
    closing.append(backend.client)
    # Occupancy known (as beat's reconciliation would leave it): only `watched` is watched.
    Occupancy(SharedState(backend), reconcile_s=3600).reconcile(
        [f"private-logs-{watched}"], int(time.time() * 1000))
    workers.start(CeleryWorker(env, concurrency=2))
    subscriber = subscriber_factory()
    subscribe(subscriber, f"private-logs-{watched}")
    start_run(env, "burst", watched, lines=300)
    start_run(env, "burst", unwatched, lines=40)
    (tmp_path / "emit_app.py").write_text(APP_EVENTS)
    emitted = run_python(str(tmp_path / "emit_app.py"), env=env, cwd=tmp_path, timeout_s=120)
    assert emitted.returncode == 0, emitted.stderr

    assert sorted(set(wait_for_lines(subscriber, f"private-logs-{watched}", 300))) == list(
        range(1, 301))
    store = open_store(sqlite_url)
    wait_until(lambda: store.broadcast_counts() == {("sent", "pusher"): 300, ("skipped", None): 40},
               "every line marked in SQL")
    wait_until(lambda: all((run := store.run(r)) is not None and run.status == "succeeded"
                           for r in (watched, unwatched)), "both runs to end")

    api = ApiServer(env)
    closing.append(api)
    api.start()
    wait_until(lambda: value(scrape(api)[0], "relaycast_app_events_total", outcome="sent") == 10,
               "the app events to be counted")
    samples, types = scrape(api)
    result = relaycast_cli("status", "--json", env=env)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    pusher = next(row for row in report["broadcasters"] if row["name"] == "pusher")
    pipeline = report["pipeline"]

    # SQL: lines stored, broadcast, skipped (and none dead-lettered).
    counts = store.broadcast_counts()
    assert value(samples, "relaycast_lines_stored_total") == sum(counts.values()) == 340
    assert value(samples, "relaycast_lines_broadcast_total") == counts[("sent", "pusher")] == 300
    assert value(samples, "relaycast_lines_skipped_total") == counts[("skipped", None)] == 40
    assert value(samples, "relaycast_lines_dead_lettered_total") == 0
    # The status report, from the same shared state (a fresh prefix: totals = the last hour).
    assert pipeline["unwatched_lines_today"] == 40
    assert value(samples, "relaycast_unwatched_messages_saved_total") == \
        pipeline["unwatched_messages_today"] > 0
    assert value(samples, "relaycast_provider_messages_total", broadcaster="pusher") == \
        pusher["sent_last_hour"] > 0
    assert value(samples, "relaycast_provider_requests_total", broadcaster="pusher") == \
        pusher["requests_last_hour"] > 0
    assert value(samples, "relaycast_provider_request_seconds_count", broadcaster="pusher") == \
        pusher["requests_last_hour"]
    assert value(samples, "relaycast_provider_request_seconds_bucket", broadcaster="pusher",
                 le="+Inf") == pusher["requests_last_hour"]
    assert samples.get("relaycast_provider_failures_total", {}) == {}, "nothing failed"
    assert pusher["failed_last_hour"] == {}
    assert value(samples, "relaycast_broadcast_task_lines_total") == \
        pipeline["broadcast_lines_last_hour"] >= 340, "a retry carries its lines again"
    assert value(samples, "relaycast_broadcast_tasks_total") == pipeline["broadcast_tasks_last_hour"]
    assert value(samples, "relaycast_batches_dead_lettered_total") == \
        pipeline["dead_lettered_last_hour"] == 0
    assert value(samples, "relaycast_lines_dropped_total") == pipeline["lines_dropped_last_hour"] == 0
    assert value(samples, "relaycast_app_events_total", outcome="sent") == \
        pipeline["app_events_sent_last_hour"] == 10
    assert value(samples, "relaycast_app_events_total", outcome="dead_lettered") == 0
    # Each line delivered live once: the emit-to-publish histogram counts the 300 lines.
    assert value(samples, "relaycast_emit_to_publish_seconds_count") == 300
    buckets = sorted((float(dict(k)["le"]), v) for k, v in
                     samples["relaycast_emit_to_publish_seconds_bucket"].items())
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative"
    assert buckets[-1] == (float("inf"), 300.0)
    assert value(samples, "relaycast_emit_to_publish_seconds_sum") > 0
    # Gauges.
    assert value(samples, "relaycast_broadcaster_state", broadcaster="pusher", state="enabled") == 1
    assert value(samples, "relaycast_broadcaster_state", broadcaster="pusher", state="disabled") == 0
    assert value(samples, "relaycast_quota_used_messages", broadcaster="pusher") == \
        pusher["usage_today"]
    assert value(samples, "relaycast_quota_limit_messages", broadcaster="pusher") == \
        pusher["daily_quota"]
    assert value(samples, "relaycast_broadcast_queue_depth") == pipeline["broadcast_queue_depth"]
    assert value(samples, "relaycast_oldest_unbroadcast_line_age_seconds") == 0, "none waits"
    assert value(samples, "relaycast_runs_running") == 0
    for source in ("redis", "database", "broker"):
        assert value(samples, "relaycast_metrics_source_up", source=source) == 1
    assert types["relaycast_lines_stored"] == "counter"
    assert types["relaycast_provider_request_seconds"] == "histogram"

    # The alert rules and the dashboard name only what /metrics exposes.
    assert_names_exposed(samples, types)


def exposed_names(samples: Samples, types: dict[str, str]) -> set[str]:
    """Every series name /metrics serves, with or without samples (a counter with no label
    set yet still declares ``{name}_total``)."""
    names = set(samples)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    for family, kind in types.items():
        names.update(family + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def assert_names_exposed(samples: Samples, types: dict[str, str]) -> None:
    exposed = exposed_names(samples, types)
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    assert {"RelaycastBroadcasterDisabled", "RelaycastQuotaHigh", "RelaycastBacklog",
            "RelaycastDeadLetters"} <= set(alerts)
    dashboard = json.loads((REPO / "deploy" / "grafana" / "relaycast.json").read_text())
    panels = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expr in [*alerts.values(), *panels]:
        named = set(re.findall(r"\brelaycast_[a-z0-9_]+", expr))
        assert named, expr
        assert named <= exposed, f"{expr!r} names {sorted(named - exposed)}, not in /metrics"


def test_metrics_needs_the_token_unless_public(tmp_path: Path, closing: list[Any],
                                               open_store: Callable[[str], LogStore]) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = open_store(database)
    store.start_run("still-going", "etl", {})
    store.start_run("done", "etl", {})
    store.finish_run("done", RunStatus.SUCCEEDED)
    base = {"DATABASE_URL": database, "RELAYCAST_ADMIN_TOKEN": TOKEN}
    guarded = ApiServer(base)
    closing.append(guarded)
    guarded.start()
    assert requests.get(guarded.url + "/metrics", timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all-000"}
    assert requests.get(guarded.url + "/metrics", headers=wrong, timeout=30).status_code == 401
    samples, _ = scrape(guarded, {"Authorization": f"Bearer {TOKEN}"})
    assert value(samples, "relaycast_lines_stored_total") == 0
    assert value(samples, "relaycast_runs_running") == 1

    public = ApiServer({**base, "RELAYCAST_METRICS_PUBLIC": "true"})
    closing.append(public)
    public.start()
    samples, _ = scrape(public)
    assert value(samples, "relaycast_metrics_source_up", source="database") == 1
    assert requests.get(public.url + "/admin/broadcaster-status", timeout=30).status_code == 401, \
        "only /metrics opens"


def test_an_invalid_metrics_public_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    result = relaycast_cli("status", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
                                          "RELAYCAST_METRICS_PUBLIC": "sometimes"})
    assert result.returncode != 0
    assert "RELAYCAST_METRICS_PUBLIC" in result.stderr
    assert "Traceback" not in result.stderr


def test_counters_keep_counting_past_the_hour_and_buckets_become_seconds(sqlite_url: str) -> None:
    """The counters are running totals (the status report's are a sliding hour), and the
    latency buckets kept in milliseconds come out cumulative, in seconds, the open one +Inf."""
    clock = FakeClock()
    state = SharedState(MemoryBackend(clock=clock), clock=clock)
    settings = load_settings(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s",
                             RELAYCAST_BROADCASTERS="pusher,log", DATABASE_URL=sqlite_url)
    state.record({"pusher": counts_from_send([3.0, 40.0, 20_000.0], sent=3, failed={"quota": 2})})
    state.count_pipeline({PipelineCounter.DEAD_LETTERED: 1})
    clock.advance(2 * 3600)
    state.record({"pusher": counts_from_send([1.0], sent=1, failed={})})
    assert state.counts("pusher").sent == 1, "the status window forgot the first hour"

    samples: Samples = {}
    for family in text_string_to_metric_families(
            generate_latest(build_registry(settings, state)).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    assert value(samples, "relaycast_provider_messages_total", broadcaster="pusher") == 4
    assert value(samples, "relaycast_provider_requests_total", broadcaster="pusher") == 4
    assert value(samples, "relaycast_provider_failures_total", broadcaster="pusher",
                 error_class="quota") == 2
    assert value(samples, "relaycast_batches_dead_lettered_total") == 1
    buckets = {dict(k)["le"]: v for k, v in
               samples["relaycast_provider_request_seconds_bucket"].items()
               if dict(k)["broadcaster"] == "pusher"}
    assert (buckets["0.002"], buckets["0.005"], buckets["0.05"], buckets["10"],
            buckets["+Inf"]) == (1, 2, 3, 3, 4)
    assert value(samples, "relaycast_provider_request_seconds_sum", broadcaster="pusher") == \
        pytest.approx(20.044)
    # 22:13 UTC plus two hours is a new UTC day: today's quota use starts again.
    assert value(samples, "relaycast_quota_used_messages", broadcaster="pusher") == 1
    assert value(samples, "relaycast_metrics_source_up", source="state") == 1
