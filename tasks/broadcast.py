"""The broadcast task: one per emitter flush, carrying every line of the flush.

The task hands the lines to this process's :class:`~broadcasters.manager.BroadcasterManager`,
records in SQL which broadcaster carried which lines, and retries what no broadcaster could
take yet with exponential backoff and jitter. After ``RELAYCAST_BROADCAST_MAX_RETRIES`` the
batch is dead-lettered: its lines are marked ``failed`` in SQL (they stay readable through
``relaycast logs``) and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import Task

from broadcasters.base import Message
from broadcasters.manager import SendReport
from broadcasters.packing import LOG_EVENT, LogBatch
from tasks import runtime
from tasks.app import BROADCAST_QUEUE, app
from tasks.backoff import compute_backoff
from workflows.models import FAILED, SENT

logger = logging.getLogger(__name__)

TASK_NAME = "relaycast.broadcast"


def enqueue_batch(batch: dict[str, Any]) -> None:
    """Publish one broadcast task (raises if the broker cannot be reached in ~2 s)."""
    lines = sum(len(run["events"]) for run in batch["runs"])
    runs = ",".join(run["run_id"] for run in batch["runs"][:3])
    broadcast.apply_async(
        args=[batch], queue=BROADCAST_QUEUE,
        argsrepr=f"(runs={runs}{'…' if len(batch['runs']) > 3 else ''}, lines={lines}, "
                 f"admin={len(batch['admin'])})",
    )


def items_of(batch: dict[str, Any]) -> list[Message | LogBatch]:
    items: list[Message | LogBatch] = [
        LogBatch(run["channel"], run["run_id"], run["events"]) for run in batch["runs"]]
    items.extend(Message.from_data(a["channel"], a["event"], a["data"], a["id"])
                 for a in batch.get("admin", []))
    return items


def batch_of(messages: Sequence[Message]) -> dict[str, Any]:
    """The task argument that re-sends ``messages`` (what a retry carries)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    admin = []
    for message in messages:
        data = json.loads(message.payload)
        if message.event == LOG_EVENT and message.seqs is not None:
            runs.setdefault((str(data["run_id"]), message.channel), []).extend(data["events"])
        else:
            admin.append({"channel": message.channel, "event": message.event, "data": data,
                          "id": message.id})
    return {"runs": [{"run_id": run_id, "channel": channel, "events": events}
                     for (run_id, channel), events in runs.items()], "admin": admin}


def _ranges(messages: Sequence[Message]) -> list[tuple[str, int, int]]:
    """Seq ranges of ``messages``, adjacent ranges of a run merged (one UPDATE each)."""
    spans = sorted((m.id.rsplit(":", 1)[0], m.seqs[0], m.seqs[1])
                   for m in messages if m.seqs is not None)
    merged: list[tuple[str, int, int]] = []
    for run_id, first, last in spans:
        if merged and merged[-1][0] == run_id and merged[-1][2] + 1 >= first:
            merged[-1] = (run_id, merged[-1][1], max(merged[-1][2], last))
        else:
            merged.append((run_id, first, last))
    return merged


def record_outcome(report: SendReport, dead: Sequence[Message] = ()) -> None:
    """Write who carried which lines into SQL; never fails the task (bookkeeping only)."""
    try:
        store = runtime.store()
        by_broadcaster: dict[str, list[Message]] = {}
        for message, name in report.delivered:
            by_broadcaster.setdefault(name, []).append(message)
        for name, messages in by_broadcaster.items():
            store.mark(_ranges(messages), SENT, name)
        failed = [m for m, _ in report.failed] + list(dead)
        store.mark(_ranges(failed), FAILED)
    except Exception:
        logger.exception("could not record broadcast state in SQL")


class BroadcastTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # decided per call from the settings


@app.task(bind=True, base=BroadcastTask, name=TASK_NAME)
def broadcast(self: BroadcastTask, batch: dict[str, Any]) -> dict[str, Any]:
    settings = runtime.settings()
    manager = runtime.manager()
    lines = sum(len(run["events"]) for run in batch["runs"])
    report = manager.send(items_of(batch))
    manager.state.count_pipeline(broadcast_tasks=1, broadcast_lines=lines)
    summary: dict[str, Any] = {
        "delivered": {}, "failed": len(report.failed), "pending": len(report.pending),
        "attempt": self.request.retries,
    }
    for _, name in report.delivered:
        summary["delivered"][name] = summary["delivered"].get(name, 0) + 1
    if not report.should_retry:
        record_outcome(report)
        return summary
    attempt = self.request.retries
    reasons = sorted({str(e) for e in report.pending_errors.values()})
    if attempt >= settings.broadcast_max_retries:
        record_outcome(report, dead=report.pending)
        manager.state.count_pipeline(dead_lettered=1)
        logger.error("broadcast dead-lettered after %d attempt(s): %d message(s) not delivered "
                     "(%s); the lines are in SQL, marked failed", attempt + 1, len(report.pending),
                     "; ".join(reasons))
        summary["dead_lettered"] = True
        return summary
    record_outcome(report)
    countdown = compute_backoff(attempt, max_s=settings.retry_backoff_max_s,
                                retry_after_s=report.retry_after_s)
    logger.warning("broadcast retry %d in %.1fs: %d message(s) pending (%s)", attempt + 1,
                   countdown, len(report.pending), "; ".join(reasons))
    raise self.retry(args=[batch_of(report.pending)], countdown=countdown,
                     max_retries=settings.broadcast_max_retries)


__all__ = ["batch_of", "broadcast", "enqueue_batch", "items_of"]
