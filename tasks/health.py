"""The periodic health task (celery beat, every ``RELAYCAST_HEALTH_INTERVAL_S``).

Reads the shared state, the broadcast queue's depth and the oldest line not yet broadcast;
builds a :class:`~broadcasters.status.HealthReport`; publishes it on
``{prefix}admin-health`` through the manager (so it travels by the fallback when Pusher is
off); stores it as the latest in Redis (expiring after about two intervals) and in SQL;
logs it as one line; sends the alerts its changes call for to ``RELAYCAST_ALERT_WEBHOOK_URL``
(:mod:`broadcasters.alerts`: once per transition across every worker, bounded in time, never
raising); and returns it, so Flower shows it as the task result.
"""

from __future__ import annotations

import logging
from typing import Any

from broadcasters import alerts
from broadcasters.base import Message
from broadcasters.status import save_latest
from broadcasters.wire import HEALTH_EVENT, HEALTH_TASK, Channels
from tasks import runtime
from tasks.celery_app import app
from tasks.reporting import compute_report

logger = logging.getLogger(__name__)

TASK_NAME = HEALTH_TASK


@app.task(name=TASK_NAME, ignore_result=False)
def health() -> dict[str, Any]:
    settings = runtime.settings()
    manager = runtime.manager()
    report = compute_report(settings, manager.state)
    data = report.model_dump(mode="json")
    message = Message.from_data(Channels(settings.channel_prefix).admin_health, HEALTH_EVENT,
                                data, f"health:{report.generated_at:.3f}")
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
    alerts.notify(settings, manager.state, report)
    return data
