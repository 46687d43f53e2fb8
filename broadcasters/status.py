"""The health report: every broadcaster's state and counters, and the pipeline's backlog.

Built by the periodic health task (``tasks/health.py``) and, when no recent report exists,
live by ``relaycast status``. Counters come from per-minute buckets in the shared state,
so "the last interval" is the last ``ceil(interval / 60)`` minutes (at least one).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field, computed_field

from broadcasters import keys
from broadcasters.factory import is_live
from broadcasters.state import BroadcasterState, Counts, SharedState, next_utc_midnight, sent_series
from config import Settings

LATEST_KEY = keys.HEALTH_LATEST
QUOTA_WARNING_FRACTION = 0.8
PROVIDERS_WITH_QUOTA = ("pusher", "ably")


class BroadcasterHealth(BaseModel):
    name: str
    state: BroadcasterState
    #: Does it reach browsers? (``log`` does not.)
    live: bool = True
    reason: str | None = None
    cause: str | None = None
    since: float | None = None
    until: float | None = None
    set_by: str | None = None
    sent_interval: int = 0
    failed_interval: dict[str, int] = Field(default_factory=dict)
    skipped_interval: int = 0
    sent_last_hour: int = 0
    requests_last_hour: int = 0
    failed_last_hour: dict[str, int] = Field(default_factory=dict)
    skipped_last_hour: int = 0
    error_rate_last_hour: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    usage_today: int = 0
    daily_quota: int | None = None
    quota_used_fraction: float | None = None
    quota_warning: bool = False
    quota_exhausted_at: float | None = None
    last_ok_at: float | None = None
    last_error_at: float | None = None
    last_error: str | None = None
    #: Its latest call failed (within the last two intervals): since when.
    failing_since: float | None = None
    #: Messages sent in each of the last 60 minutes, oldest first: for the API's chart, read
    #: with the counters above; not part of the report as stored or shown.
    sent_per_minute: list[int] = Field(default_factory=list, exclude=True)


class PipelineHealth(BaseModel):
    broadcast_queue_depth: int | None = None
    lines_dropped_interval: int = 0
    lines_dropped_last_hour: int = 0
    dead_lettered_interval: int = 0
    dead_lettered_last_hour: int = 0
    broadcast_tasks_last_hour: int = 0
    broadcast_lines_last_hour: int = 0
    oldest_unbroadcast_age_s: float | None = None
    #: Batches published without their predecessor (the ordering gate's bound ran out).
    gate_timeouts_last_hour: int = 0
    #: Occupancy gating: "off", "known" (skipping unwatched runs) or "unknown" (publishing
    #: everything: not reconciled yet, reconciling failing, or Redis unreachable).
    occupancy: str = "off"
    watched_channels: int | None = None
    #: Lines not published today because nobody watched their run, and the provider
    #: messages (so the quota) that saved.
    unwatched_lines_today: int = 0
    unwatched_messages_today: int = 0
    #: Application events (``relaycast.broadcast``): delivered; attempts that did not deliver
    #: them (retried, or given up); given up for good (logged by the worker, stored nowhere).
    app_events_sent_last_hour: int = 0
    app_events_failed_last_hour: int = 0
    app_events_dead_lettered_interval: int = 0
    app_events_dead_lettered_last_hour: int = 0
    #: Alerts (``RELAYCAST_ALERT_WEBHOOK_URL``) the webhook took, and given up after retries.
    alerts_sent_last_hour: int = 0
    alerts_failed_last_hour: int = 0
    errors: list[str] = Field(default_factory=list)


class HealthReport(BaseModel):
    generated_at: float
    interval_s: float
    window_minutes: int
    state_backend: str
    state_errors: int
    active_broadcaster: str | None = None
    broadcasters: list[BroadcasterHealth]
    #: The mirror (``RELAYCAST_MIRROR``): best effort, so its failures are warnings.
    mirror: BroadcasterHealth | None = None
    pipeline: PipelineHealth
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    stale: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def healthy(self) -> bool:
        return not self.problems and not self.stale


def window_minutes(interval_s: float) -> int:
    return max(1, math.ceil(interval_s / 60))


def failing_window_s(settings: Settings) -> float:
    """How recent a failure must be to count as "failing now"."""
    return max(60.0, 2 * settings.health_interval_s)


def broadcaster_health(settings: Settings, state: SharedState, now: float,
                       names: Sequence[str] | None = None) -> list[BroadcasterHealth]:
    minutes = window_minutes(settings.health_interval_s)
    names = settings.broadcaster_order if names is None else names
    flags = state.flags(names)
    outcomes = state.outcomes(names)
    rows = []
    for name in names:
        flag = flags.get(name)
        outcome = outcomes.get(name)
        tables = state.stats_tables(name, max(minutes, 60))  # one read for every window
        recent = Counts.of(tables[-minutes:])
        hour = Counts.of(tables[-60:])
        attempts = hour.sent + hour.failed_total
        row = BroadcasterHealth(
            name=name,
            state=flag.kind if flag else BroadcasterState.ENABLED,
            live=is_live(name.removeprefix(keys.MIRROR)),
            reason=flag.reason if flag else None,
            cause=flag.cause if flag else None,
            since=flag.since if flag else None,
            until=flag.until if flag else None,
            set_by=flag.set_by if flag else None,
            sent_interval=recent.sent,
            failed_interval=dict(recent.failed),
            skipped_interval=recent.skipped,
            sent_last_hour=hour.sent,
            requests_last_hour=hour.requests,
            failed_last_hour=dict(hour.failed),
            skipped_last_hour=hour.skipped,
            error_rate_last_hour=round(hour.failed_total / attempts, 4) if attempts else 0.0,
            latency_p50_ms=hour.latency_percentile_ms(0.50),
            latency_p95_ms=hour.latency_percentile_ms(0.95),
            usage_today=state.usage_today(name)["messages"],
            sent_per_minute=sent_series(tables[-60:], 60),
        )
        if outcome is not None:
            row.last_ok_at, row.last_error_at = outcome.ok_at, outcome.error_at
            row.last_error = outcome.error
            row.failing_since = outcome.failing_since(now, failing_window_s(settings))
        if name in PROVIDERS_WITH_QUOTA:
            quota = settings.daily_quota
            row.daily_quota = quota
            row.quota_used_fraction = round(row.usage_today / quota, 4)
            row.quota_warning = row.quota_used_fraction >= QUOTA_WARNING_FRACTION
            row.quota_exhausted_at = _projected_exhaustion(row.usage_today, quota, hour.sent, now)
        rows.append(row)
    return rows


def _projected_exhaustion(used: int, quota: int, sent_last_hour: int, now: float) -> float | None:
    """When today's quota runs out at the last hour's rate (None: not before UTC midnight)."""
    if used >= quota:
        return now
    if sent_last_hour <= 0:
        return None
    at = now + (quota - used) / (sent_last_hour / 3600.0)
    return at if at < next_utc_midnight(now) else None


def build_report(settings: Settings, state: SharedState, pipeline: PipelineHealth,
                 active_broadcaster: str | None = None, now: float | None = None) -> HealthReport:
    now = time.time() if now is None else now
    rows = broadcaster_health(settings, state, now)
    mirror = (broadcaster_health(settings, state, now, [keys.mirror(settings.mirror)])[0]
              if settings.mirror else None)
    report = HealthReport(
        generated_at=now, interval_s=settings.health_interval_s,
        window_minutes=window_minutes(settings.health_interval_s),
        state_backend=state.backend_name, state_errors=state.errors,
        active_broadcaster=active_broadcaster, broadcasters=rows, mirror=mirror,
        pipeline=pipeline)
    live = [row for row in rows if row.live]
    for row in rows:
        if row.state is not BroadcasterState.ENABLED:
            report.problems.append(f"{row.name} {row.state}: {row.reason}")
        elif row.live and row.failing_since is not None:
            report.problems.append(f"{row.name} failing since {_when(row.failing_since)}: "
                                   f"{row.last_error}")
        if row.quota_warning:
            report.warnings.append(
                f"{row.name} used {row.quota_used_fraction:.0%} of its daily quota")
        if row.quota_exhausted_at is not None and row.state == "enabled":
            report.warnings.append(f"{row.name} quota runs out at "
                                   f"{_when(row.quota_exhausted_at)} at the current rate")
    if mirror is not None and mirror.failing_since is not None:
        report.warnings.append(f"the mirror to {settings.mirror} is failing: {mirror.last_error}")
    carrier = next((row for row in rows if row.name == active_broadcaster), None)
    if live and carrier is not None and not carrier.live:
        report.problems.append(f"traffic is on {carrier.name}, which no browser receives: "
                               f"viewers fall back to polling the history")
    if pipeline.alerts_failed_last_hour:
        # A warning, not a problem: a dead alert sink must not itself raise an alert.
        report.warnings.append(f"{pipeline.alerts_failed_last_hour} alert(s) not delivered to "
                               "RELAYCAST_ALERT_WEBHOOK_URL in the last hour")
    if pipeline.occupancy == "unknown":
        report.warnings.append("occupancy unknown (not reconciled recently): publishing every "
                               "run's lines")
    if pipeline.dead_lettered_interval:
        report.problems.append(f"{pipeline.dead_lettered_interval} batch(es) dead-lettered")
    if pipeline.app_events_dead_lettered_interval:
        report.problems.append(f"{pipeline.app_events_dead_lettered_interval} app event(s) "
                               "dead-lettered")
    if pipeline.lines_dropped_interval:
        report.problems.append(f"{pipeline.lines_dropped_interval} line(s) dropped by emitters")
    stuck_after_s = max(60.0, 2 * settings.health_interval_s)
    if pipeline.oldest_unbroadcast_age_s is not None and pipeline.oldest_unbroadcast_age_s > stuck_after_s:
        report.problems.append(
            f"a line has waited {pipeline.oldest_unbroadcast_age_s:.0f}s to be broadcast")
    if state.errors:
        report.problems.append(f"shared state unreachable ({state.errors} error(s))")
    report.problems.extend(pipeline.errors)
    return report


def save_latest(state: SharedState, report: HealthReport) -> None:
    """The latest report, expiring after about two intervals (a silent beat shows as stale)."""
    state.put_document(LATEST_KEY, report.model_dump_json(), 2 * report.interval_s + 5)


def load_latest(state: SharedState) -> HealthReport | None:
    raw = state.document(LATEST_KEY)
    if not raw:
        return None
    data = json.loads(raw)
    data.pop("healthy", None)
    return HealthReport.model_validate(data)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "re-enabled"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_table(report: HealthReport) -> str:
    header = ("broadcaster", "state", "sent/1h", "failed/1h", "p95 ms", "today/quota", "until",
              "reason")
    table: list[tuple[str, ...]] = [header]
    for row in [*report.broadcasters, *([report.mirror] if report.mirror else [])]:
        failed = ",".join(f"{k}={v}" for k, v in sorted(row.failed_last_hour.items())) or "0"
        today = (f"{row.usage_today}/{row.daily_quota}" if row.daily_quota
                 else str(row.usage_today))
        p95 = "-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:g}"
        until = _when(row.until) if row.state is not BroadcasterState.ENABLED else "-"
        table.append((row.name, row.state, str(row.sent_last_hour), failed, p95, today, until,
                      row.reason or ""))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in table]
    p = report.pipeline
    oldest = "-" if p.oldest_unbroadcast_age_s is None else f"{p.oldest_unbroadcast_age_s:.1f}s"
    depth = "-" if p.broadcast_queue_depth is None else str(p.broadcast_queue_depth)
    lines.append(f"pipeline: queue depth {depth}, oldest unbroadcast line {oldest}, dropped "
                 f"{p.lines_dropped_last_hour}/1h, dead-lettered {p.dead_lettered_last_hour}/1h")
    if p.app_events_sent_last_hour or p.app_events_failed_last_hour or \
            p.app_events_dead_lettered_last_hour:
        lines.append(f"app events: sent {p.app_events_sent_last_hour}/1h, failed "
                     f"{p.app_events_failed_last_hour}/1h, dead-lettered "
                     f"{p.app_events_dead_lettered_last_hour}/1h")
    if report.active_broadcaster:
        lines.append(f"active broadcaster: {report.active_broadcaster}")
    if p.occupancy != "off":
        lines.append(f"occupancy: {p.occupancy}, {p.watched_channels or 0} run(s) watched; "
                     f"today {p.unwatched_lines_today} unwatched line(s) not published, "
                     f"{p.unwatched_messages_today} provider message(s) saved")
    for problem in report.problems:
        lines.append(f"problem: {problem}")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    age = time.time() - report.generated_at
    verdict = "healthy" if report.healthy else " and ".join(
        word for word, applies in (("degraded", report.problems), ("stale", report.stale)) if applies)
    extra = ""
    if report.state_backend == "memory":
        extra = " (state in memory: this process only; set REDIS_URL to share it)"
    if report.stale:
        extra += " (no report from the health task in the last two intervals: is celery beat running?)"
    lines.append(f"overall: {verdict}, report {age:.0f}s old{extra}")
    return "\n".join(lines)
