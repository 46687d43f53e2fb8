"""The retention task (celery beat, every ``RELAYCAST_PRUNE_INTERVAL_S``): delete log lines,
ended runs, their counters and health reports older than ``RELAYCAST_RETENTION_DAYS``.

It runs on the broadcast queue (like the sweeper) in short batches with pauses (see
:mod:`workflows.retention`), and gives up a worker process for at most ``TIME_BUDGET_S``
per run: what is left is taken by the next run. ``relaycast prune`` does the same by hand.
"""

from __future__ import annotations

import logging
from typing import Any

from broadcasters.wire import PRUNE_TASK
from tasks import runtime
from tasks.celery_app import app
from workflows import retention

logger = logging.getLogger(__name__)

TASK_NAME = PRUNE_TASK
#: The longest one run of the task holds a worker process.
TIME_BUDGET_S = 600.0


@app.task(name=TASK_NAME)
def prune() -> dict[str, Any]:
    settings = runtime.settings()
    if settings.retention_s == 0:
        return {"pruned": False, "reason": "RELAYCAST_RETENTION_DAYS=0 keeps everything"}
    before_ms = retention.bound_ms(settings.retention_s)
    budget = min(TIME_BUDGET_S, settings.prune_interval_s)
    result = retention.prune(runtime.store(), before_ms,
                             retention.PruneOptions(time_budget_s=budget))
    deleted = result.deleted
    summary: dict[str, Any] = {
        "pruned": True, "before_ms": before_ms, "lines": deleted.lines, "runs": deleted.runs,
        "counters": deleted.counters, "health_reports": deleted.health_reports,
        "batches": result.batches, "seconds": round(result.seconds, 2),
        "complete": result.complete}
    if deleted.total or not result.complete:
        logger.info("retention: deleted %d line(s), %d run(s), %d run counter(s) and %d health "
                    "report(s) older than %d day(s) in %.1fs%s", deleted.lines, deleted.runs,
                    deleted.counters, deleted.health_reports, settings.retention_days,
                    result.seconds, "" if result.complete else
                    f"; stopped after {budget:.0f}s, the next run goes on")
    return summary


__all__ = ["TASK_NAME", "prune"]
