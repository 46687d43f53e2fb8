"""``GET /metrics``: the whole deployment's figures in Prometheus' text format.

Nothing here counts in the API's own process: every scrape reads what every worker already
writes (:class:`ClusterCollector`, on a private registry), so any API replica answers for
the cluster and a restart of the API resets nothing:

* counters: the running totals in the shared state (``totals:*``, :mod:`broadcasters.keys`:
  per broadcaster, the pipeline's, the unwatched lines'), and the lines in SQL per broadcast
  state (stored, broadcast, skipped, dead-lettered);
* histograms: the provider-request and emit-to-publish buckets kept in those totals;
* gauges: each broadcaster's state, today's quota, the broadcast queue's depth, the oldest
  line still waiting, the runs running, and which of the sources answered
  (``relaycast_metrics_source_up``).

A source that does not answer leaves its figures out of that scrape (Prometheus sees the
series go stale) rather than reporting zeros.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from broadcasters import keys
from broadcasters.histogram import LATENCY_BUCKETS_MS, PUBLISH_LAG_BUCKETS_MS
from broadcasters.ordering import WAIT_BUCKETS_MS
from broadcasters.state import BroadcasterState, SharedState
from broadcasters.status import PROVIDERS_WITH_QUOTA
from config import Settings
from tasks.reporting import queue_depth
from workflows.models import LineState
from workflows.store import store_for

logger = logging.getLogger(__name__)

NS = "relaycast"

#: Pipeline counters exposed as plain counters: (metric name without ``relaycast_``, help,
#: the pipeline counter). The dead-letter and drop counters are what alerts watch.
PIPELINE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("lines_dropped", "Lines emitters dropped from a full buffer.",
     keys.PipelineCounter.LINES_DROPPED),
    ("batches_dead_lettered", "Broadcast batches dead-lettered (retries ran out, or nothing "
     "live can take them).", keys.PipelineCounter.DEAD_LETTERED),
    ("broadcast_tasks", "Broadcast tasks run, retries included.",
     keys.PipelineCounter.BROADCAST_TASKS),
    ("broadcast_task_lines", "Lines carried by broadcast tasks, retries included.",
     keys.PipelineCounter.BROADCAST_LINES),
    ("gate_timeouts", "Batches published without their predecessor (ordering gate bound).",
     keys.PipelineCounter.GATE_TIMEOUTS),
)

#: Application events (``broadcast()``) by outcome: the pipeline counter of each.
APP_EVENT_OUTCOMES = (("sent", keys.PipelineCounter.APP_EVENTS_SENT),
                      ("failed", keys.PipelineCounter.APP_EVENTS_FAILED),
                      ("dead_lettered", keys.PipelineCounter.APP_EVENTS_DEAD_LETTERED))
ALERT_OUTCOMES = (("sent", keys.PipelineCounter.ALERTS_SENT),
                  ("failed", keys.PipelineCounter.ALERTS_FAILED))

#: Lines in SQL per broadcast state: (metric name, help, the states counted).
SQL_LINE_COUNTERS: tuple[tuple[str, str, tuple[LineState, ...]], ...] = (
    ("lines_broadcast", "Lines a live broadcaster delivered (SQL state sent).",
     (LineState.SENT,)),
    ("lines_skipped", "Lines not published because nobody watched their run (SQL state "
     "skipped).", (LineState.SKIPPED,)),
    ("lines_dead_lettered", "Lines dead-lettered (SQL state failed; relaycast replay sends "
     "them again).", (LineState.FAILED,)),
)


def cumulative_buckets(counts: Mapping[int, float], bounds: Sequence[int], scale: float
                       ) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, ``+Inf`` last) of counts kept per upper bound, each
    bound multiplied by ``scale`` (ms to seconds); the open bucket past the last bound goes
    to ``+Inf`` only."""
    out: list[tuple[str, float]] = []
    seen = 0.0
    for bound in bounds:
        seen += counts.get(bound, 0)
        out.append((f"{bound * scale:g}", seen))
    out.append(("+Inf", float(sum(counts.values()))))
    return out


def _buckets(table: Mapping[str, float], prefix: str) -> dict[int, float]:
    """Bucket counts of a totals table whose fields are ``{prefix}{bound}``."""
    return {int(k.removeprefix(prefix)): v for k, v in table.items()
            if k.startswith(prefix) and k.removeprefix(prefix).isdigit()}


class ClusterCollector(Collector):
    """Reads the deployment's figures on every scrape (see the module's docstring)."""

    def __init__(self, settings: Settings, state: SharedState) -> None:
        self.settings = settings
        self.state = state

    @property
    def names(self) -> list[str]:
        """Every broadcaster, and the mirror's copies (``mirror:{name}``) when one is set."""
        names = list(self.settings.broadcaster_order)
        if self.settings.mirror:
            names.append(keys.mirror(self.settings.mirror))
        return names

    def collect(self) -> Iterator[Metric]:
        up: dict[str, bool] = {}
        yield from self._from_state(up)
        yield from self._from_database(up)
        yield from self._from_broker(up)
        source = GaugeMetricFamily(f"{NS}_metrics_source_up", "Whether this scrape could read "
                                   "each source (1) or not (0).", labels=["source"])
        for name, ok in up.items():
            source.add_metric([name], 1.0 if ok else 0.0)
        yield source

    # The shared state --------------------------------------------------------------------------

    def _from_state(self, up: dict[str, bool]) -> Iterator[Metric]:
        names = self.names
        errors_before = self.state.errors
        tables = self.state.totals([keys.stats(n) for n in names] + [keys.PIPELINE, keys.UNWATCHED])
        flags = self.state.flags(names) if tables is not None else {}
        usage = {n: self.state.usage_today(n)[keys.UsageField.MESSAGES]
                 for n in names if n in PROVIDERS_WITH_QUOTA} if tables is not None else {}
        up["redis" if self.settings.redis_url else "state"] = (
            tables is not None and self.state.errors == errors_before)
        if tables is None:
            return
        stats = dict(zip(names, tables, strict=False))
        pipeline, unwatched = tables[len(names)], tables[len(names) + 1]
        yield from self._providers(stats)
        yield from self._pipeline(pipeline, unwatched)

        state = GaugeMetricFamily(f"{NS}_broadcaster_state", "1 for each broadcaster's current "
                                  "state (enabled, paused, disabled), 0 for the others.",
                                  labels=["broadcaster", "state"])
        for name in names:
            flag = flags.get(name)
            current = flag.kind if flag else BroadcasterState.ENABLED
            for each in BroadcasterState:
                state.add_metric([name, str(each)], 1.0 if each == current else 0.0)
        yield state
        used = GaugeMetricFamily(f"{NS}_quota_used_messages", "Messages sent today (UTC) "
                                 "against the daily quota.", labels=["broadcaster"])
        limit = GaugeMetricFamily(f"{NS}_quota_limit_messages", "The daily quota "
                                  "(RELAYCAST_DAILY_QUOTA).", labels=["broadcaster"])
        for name, messages in usage.items():
            used.add_metric([name], float(messages))
            limit.add_metric([name], float(self.settings.daily_quota))
        yield used
        yield limit

    def _providers(self, stats: Mapping[str, Mapping[str, float]]) -> Iterator[Metric]:
        messages = CounterMetricFamily(f"{NS}_provider_messages", "Messages a broadcaster "
                                       "delivered.", labels=["broadcaster"])
        requests = CounterMetricFamily(f"{NS}_provider_requests", "Requests made to a "
                                       "broadcaster.", labels=["broadcaster"])
        skipped = CounterMetricFamily(f"{NS}_provider_skipped_messages", "Messages not sent "
                                      "through a broadcaster because it was disabled or paused "
                                      "(a mirror: not copied).",
                                      labels=["broadcaster"])
        failures = CounterMetricFamily(f"{NS}_provider_failures", "Messages a broadcaster "
                                       "failed, by error class.",
                                       labels=["broadcaster", "error_class"])
        seconds = HistogramMetricFamily(f"{NS}_provider_request_seconds", "Duration of "
                                        "requests to a broadcaster.", labels=["broadcaster"])
        for name, table in stats.items():
            messages.add_metric([name], table.get(keys.StatField.SENT, 0.0))
            requests.add_metric([name], table.get(keys.StatField.REQUESTS, 0.0))
            skipped.add_metric([name], table.get(keys.StatField.SKIPPED, 0.0))
            for field, value in sorted(table.items()):
                if field.startswith(keys.FAILED):
                    failures.add_metric([name, field.removeprefix(keys.FAILED)], value)
            seconds.add_metric([name], cumulative_buckets(_buckets(table, keys.LATENCY),
                                                          LATENCY_BUCKETS_MS, 0.001),
                               table.get(keys.StatField.LATENCY_SUM_MS, 0.0) / 1000)
        yield from (messages, requests, skipped, failures, seconds)

    def _pipeline(self, pipeline: Mapping[str, float], unwatched: Mapping[str, float]
                  ) -> Iterator[Metric]:
        for name, help_text, counter in PIPELINE_COUNTERS:
            yield CounterMetricFamily(f"{NS}_{name}", help_text, value=pipeline.get(counter, 0.0))
        app = CounterMetricFamily(f"{NS}_app_events", "Application events (broadcast()) by "
                                  "outcome: sent, failed (an attempt that did not deliver), "
                                  "dead_lettered (given up).", labels=["outcome"])
        for outcome, counter in APP_EVENT_OUTCOMES:
            app.add_metric([outcome], pipeline.get(counter, 0.0))
        yield app
        alerts = CounterMetricFamily(f"{NS}_alerts", "Alerts the webhook took (sent) or given "
                                     "up after retries (failed).", labels=["outcome"])
        for outcome, counter in ALERT_OUTCOMES:
            alerts.add_metric([outcome], pipeline.get(counter, 0.0))
        yield alerts
        yield CounterMetricFamily(f"{NS}_unwatched_messages_saved", "Provider messages not "
                                  "sent because nobody watched the run.",
                                  value=unwatched.get(keys.UNWATCHED_MESSAGES, 0.0))
        lag = HistogramMetricFamily(f"{NS}_emit_to_publish_seconds", "From a line's emit to "
                                    "its delivery by a live broadcaster.",
                                    buckets=cumulative_buckets(
                                        _buckets(pipeline, keys.PUBLISH_LAG_LE),
                                        PUBLISH_LAG_BUCKETS_MS, 0.001),
                                    sum_value=pipeline.get(keys.PUBLISH_LAG_SUM_MS, 0.0) / 1000)
        yield lag
        gate = HistogramMetricFamily(f"{NS}_ordering_gate_wait_seconds", "How long batches "
                                     "waited at the ordering gate.",
                                     buckets=cumulative_buckets(
                                         _buckets(pipeline, keys.GATE_WAIT_LE),
                                         WAIT_BUCKETS_MS, 0.001),
                                     sum_value=pipeline.get(keys.GateCounter.WAIT_MS, 0.0) / 1000)
        yield gate

    # SQL -----------------------------------------------------------------------------------------

    def _from_database(self, up: dict[str, bool]) -> Iterator[Metric]:
        try:
            store = store_for(self.settings.database_url_or_default)
            counts = store.broadcast_counts()
            oldest = store.oldest_pending_ts()
            running = store.count_running()
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it could read
            logger.warning("metrics: database unreachable (%s)", type(exc).__name__)
            up["database"] = False
            return
        up["database"] = True
        by_state: dict[str, int] = {}
        for (state, _), n in counts.items():
            by_state[state] = by_state.get(state, 0) + n
        yield CounterMetricFamily(f"{NS}_lines_stored", "Lines stored in SQL (retention "
                                  "deletes old ones: a decrease is a counter reset).",
                                  value=float(sum(by_state.values())))
        for name, help_text, states in SQL_LINE_COUNTERS:
            yield CounterMetricFamily(f"{NS}_{name}", help_text,
                                      value=float(sum(by_state.get(s, 0) for s in states)))
        age = GaugeMetricFamily(f"{NS}_oldest_unbroadcast_line_age_seconds", "Age of the oldest "
                                "line not yet broadcast (0 when none waits).")
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000))
        yield age
        yield GaugeMetricFamily(f"{NS}_runs_running", "Runs whose status is running.",
                                value=float(running))

    # The broker --------------------------------------------------------------------------------

    def _from_broker(self, up: dict[str, bool]) -> Iterator[Metric]:
        broker = self.settings.broker_url
        if not broker or broker.startswith("memory://"):
            return
        try:
            depth = queue_depth(broker)
        except Exception as exc:  # noqa: BLE001
            logger.warning("metrics: broker unreachable (%s)", type(exc).__name__)
            up["broker"] = False
            return
        up["broker"] = True
        yield GaugeMetricFamily(f"{NS}_broadcast_queue_depth", "Broadcast tasks waiting in the "
                                "broker's queue.", value=float(depth))


def build_registry(settings: Settings, state: SharedState) -> CollectorRegistry:
    """A registry of its own (never the process-wide default) holding the cluster collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(settings, state))
    return registry
