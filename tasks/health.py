"""The periodic health task (celery beat, every ``RELAYCAST_HEALTH_INTERVAL_S``).

Reads the shared state, the broadcast queue's depth and the oldest line not yet broadcast;
builds a :class:`~broadcasters.status.HealthReport`; publishes it on
``{prefix}admin-health`` through the manager (so it travels by the fallback when Pusher is
off); stores it as the latest in Redis (expiring after about two intervals) and in SQL;
logs it as one line; and returns it, so Flower shows it as the task result.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broadcasters.base import Message
from broadcasters.state import SharedState
from broadcasters.status import (
    HealthReport,
    PipelineHealth,
    build_report,
    save_latest,
    window_minutes,
)
from config import Settings
from tasks import runtime
from tasks.app import BROADCAST_QUEUE, app

logger = logging.getLogger(__name__)

TASK_NAME = "relaycast.health"


def queue_depth(queue: str = BROADCAST_QUEUE) -> int:
    """Messages waiting in ``queue`` (raises if the broker cannot be reached)."""
    from kombu.exceptions import ChannelError

    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        try:
            _, count, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # an empty Redis queue has no key at all
            return 0
        return int(count)


def gather_pipeline(settings: Settings, state: SharedState) -> PipelineHealth:
    minutes = window_minutes(settings.health_interval_s)
    recent = state.pipeline_counts(minutes)
    hour = state.pipeline_counts(60)
    pipeline = PipelineHealth(
        lines_dropped_interval=recent.get("lines_dropped", 0),
        lines_dropped_last_hour=hour.get("lines_dropped", 0),
        dead_lettered_interval=recent.get("dead_lettered", 0),
        dead_lettered_last_hour=hour.get("dead_lettered", 0),
        broadcast_tasks_last_hour=hour.get("broadcast_tasks", 0),
        broadcast_lines_last_hour=hour.get("broadcast_lines", 0),
    )
    if settings.broker_url:
        try:
            pipeline.broadcast_queue_depth = queue_depth()
        except Exception as exc:  # noqa: BLE001 - a report must come out even then
            pipeline.errors.append(f"broker unreachable: {type(exc).__name__}")
    try:
        oldest = runtime.store().oldest_pending_ts()
        if oldest is not None:
            pipeline.oldest_unbroadcast_age_s = round(max(0.0, time.time() - oldest / 1000), 3)
    except Exception as exc:  # noqa: BLE001
        pipeline.errors.append(f"database unreachable: {type(exc).__name__}")
    return pipeline


def compute_report(settings: Settings, state: SharedState) -> HealthReport:
    return build_report(settings, state, gather_pipeline(settings, state),
                        active_broadcaster=state.active())


def current_report(settings: Settings, state: SharedState) -> HealthReport:
    """The latest report from beat; computed live when there is none, and then marked
    stale when Redis is configured (beat, or every worker, is down)."""
    from broadcasters.status import load_latest

    report = load_latest(state) if settings.redis_url else None
    if report is None:
        report = compute_report(settings, state)
        report.stale = settings.redis_url is not None
    return report


@app.task(name=TASK_NAME, ignore_result=False)
def health() -> dict[str, Any]:
    settings = runtime.settings()
    manager = runtime.manager()
    report = compute_report(settings, manager.state)
    data = report.model_dump(mode="json")
    message = Message.from_data(f"{settings.channel_prefix}admin-health", "health", data,
                                f"health:{report.generated_at:.3f}")
    sent = manager.send([message])
    if not sent.delivered:
        logger.warning("health report not published: %s",
                       "; ".join(str(e) for e in sent.pending_errors.values()) or "failed")
    save_latest(manager.state, report)
    try:
        runtime.store().add_health(report.generated_at, report.healthy, data)
    except Exception as exc:  # noqa: BLE001
        logger.warning("health report not stored in SQL: %s", type(exc).__name__)
    summary = ", ".join(f"{b.name}={b.state} sent/1h={b.sent_last_hour} "
                        f"failed/1h={sum(b.failed_last_hour.values())}" for b in report.broadcasters)
    logger.info("health %s: %s; queue=%s dropped/1h=%d dead/1h=%d%s",
                "ok" if report.healthy else "DEGRADED", summary,
                report.pipeline.broadcast_queue_depth, report.pipeline.lines_dropped_last_hour,
                report.pipeline.dead_lettered_last_hour,
                "; " + "; ".join(report.problems) if report.problems else "")
    return data
