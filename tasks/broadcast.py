"""The broadcast task: one per emitter flush, carrying every line of the flush.

The task passes each run's lines through the ordering gate (:mod:`broadcasters.ordering`:
a run's lines go out after the lines before them, bounded wait), hands them to this
process's :class:`~broadcasters.manager.BroadcasterManager`, and records in SQL where each
line stands:

* ``sent``: a live broadcaster delivered it;
* ``logged``: only ``log`` took it (no browser received it live);
* ``skipped``: nobody watched its run's channel (``RELAYCAST_OCCUPANCY=webhooks``), so it was
  not published; the history has it for whoever opens the run later;
* ``failed``: dead-lettered (retries ran out, or it can never be sent); ``relaycast
  replay`` sends these again;
* ``pending``: still on its way (this task retries it).

A run's admin events (``started``, its end) are lanes of the run at the same gate
(:func:`broadcasters.ordering.admin_span`): in a turn, each run's ``started`` goes before its
lines and its end after them, in one send; across batches, an end waits (bounded) until the
run's last line has had its turn, and a run's first lines wait for its ``started`` when the
batch says it has one (``after_start``). Other admin events go with the batch's first send.

Application events (``relaycast.broadcast``: ``batch["app"]``) take the same path: each
stream's events pass the same gate as a lane of their own (:func:`app_lanes`), go out with
the lines of the turn, are retried the same way, and are counted in the pipeline counters
(:class:`~broadcasters.keys.PipelineCounter`: ``app_events_sent`` / ``_failed`` /
``_dead_lettered``). They are in no database, so one that fails for good is logged at ERROR
(channel, event, id) as well as counted.

What no live broadcaster delivered is retried with exponential backoff and jitter — only
while a retry can help: after a transient failure or a short pause (a rate limit), not
while every live broadcaster is off until its quota resets or an operator re-enables it.
A retry skips ``log`` when it already took the lines. After
``RELAYCAST_BROADCAST_MAX_RETRIES`` the batch is dead-lettered and counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Task

from broadcasters import keys, logcontext
from broadcasters.backoff import compute_backoff
from broadcasters.base import Message
from broadcasters.manager import Item, SendReport, merge_reports
from broadcasters.ordering import GateStats, Span, admin_span, in_lane_order, run_span, seq_span
from broadcasters.packing import LogBatch
from broadcasters.wire import (
    BROADCAST_QUEUE,
    BROADCAST_TASK,
    LOG_EVENT,
    AdminMessage,
    AppMessage,
    Batch,
    RunLines,
    batch_lines,
    contiguous,
    describe_batch,
    is_app_message_id,
    new_batch,
    run_of_message_id,
)
from tasks import runtime
from tasks.celery_app import app
from tasks.publish_lag import publish_lag_counts
from workflows.models import LineState

logger = logging.getLogger(__name__)

TASK_NAME = BROADCAST_TASK
#: App events dead-lettered by one task that are logged one by one (the rest are counted).
_LOG_DEAD_APP_EVENTS = 20


def enqueue_batch(batch: Batch) -> None:
    """Publish one broadcast task (raises if the broker cannot be reached in ~2 s)."""
    broadcast.apply_async(args=[batch], queue=BROADCAST_QUEUE,
                          argsrepr=f"({describe_batch(batch)})")


def run_items(runs: Sequence[RunLines]) -> list[Item]:
    return [LogBatch(run["channel"], run["run_id"], run["events"]) for run in runs]


def admin_items(admin: Sequence[AdminMessage]) -> list[Item]:
    return [Message.from_data(a["channel"], a["event"], a["data"], a["id"]) for a in admin]


@dataclass(frozen=True)
class AppLane:
    """One stream's application events in a batch, in seq order (gated as one lane)."""

    stream: str
    events: list[AppMessage]


def app_lanes(app: Sequence[AppMessage]) -> list[AppLane]:
    """``app`` cut into lanes: per stream, wherever the next seq is not the one after."""
    streams: dict[str, list[AppMessage]] = {}
    for event in app:
        streams.setdefault(event["stream"], []).append(event)
    return [AppLane(stream, piece) for stream, events in streams.items()
            for piece in contiguous(sorted(events, key=_app_seq), _app_seq)]


def _app_seq(event: AppMessage) -> int:
    return event["seq"]


@dataclass(frozen=True)
class RunEvent:
    """A run's admin event (``started``, an end) as a lane of the run (:func:`admin_span`)."""

    message: AdminMessage
    place: Span


def run_events(admin: Sequence[AdminMessage]) -> tuple[list[RunEvent], list[AdminMessage]]:
    """(the run's admin events among ``admin``, as lanes; the others)."""
    lanes: list[RunEvent] = []
    others: list[AdminMessage] = []
    for message in admin:
        place = admin_span(message)
        if place is None:
            others.append(message)
        else:
            lanes.append(RunEvent(message, place))
    return lanes, others


Lane = RunLines | AppLane | RunEvent


def lane_span(lane: Lane, after_start: frozenset[str] = frozenset()) -> Span | None:
    """``lane``'s place at the gate; ``after_start``: the runs whose line 1 waits for their
    ``started`` (the batch's ``after_start``)."""
    if isinstance(lane, AppLane):
        return seq_span(keys.app_lane(lane.stream), lane.events[0]["seq"], lane.events[-1]["seq"])
    if isinstance(lane, RunEvent):
        return lane.place
    return run_span(lane, lane["run_id"] in after_start)


def app_items(app: Sequence[AppMessage]) -> list[Item]:
    return [Message(a["channel"], a["event"], a["payload"], a["id"]) for a in app]


def batch_of(messages: Sequence[Message], *, live_only: bool) -> Batch:
    """The task argument that re-sends ``messages`` (what a retry carries; never gated)."""
    runs: dict[tuple[str, str], list[Any]] = {}
    admin: list[AdminMessage] = []
    for message in messages:
        data = json.loads(message.payload)
        if message.event == LOG_EVENT and message.seqs is not None:
            runs.setdefault((str(data["run_id"]), message.channel), []).extend(data["events"])
        else:
            admin.append({"channel": message.channel, "event": message.event, "data": data,
                          "id": message.id})
    return new_batch([{"run_id": run_id, "channel": channel, "events": piece}
                      for (run_id, channel), events in runs.items()
                      for piece in contiguous(events)], admin,
                     ordered=False, live_only=live_only)


def line_ranges(messages: Sequence[Message]) -> list[tuple[str, int, int]]:
    """Seq ranges of ``messages``, adjacent ranges of a run merged (one UPDATE each)."""
    spans = sorted((run_of_message_id(m.id), m.seqs[0], m.seqs[1])
                   for m in messages if m.seqs is not None)
    merged: list[tuple[str, int, int]] = []
    for run_id, first, last in spans:
        if merged and merged[-1][0] == run_id and merged[-1][2] + 1 >= first:
            merged[-1] = (run_id, merged[-1][1], max(merged[-1][2], last))
        else:
            merged.append((run_id, first, last))
    return merged


def record_outcome(report: SendReport, *, logged: Sequence[tuple[Message, str]] = (),
                   failed: Sequence[Message] = ()) -> None:
    """Write where each line stands into SQL; never fails the task (bookkeeping only)."""
    try:
        store = runtime.store()
        manager = runtime.manager()
        by_broadcaster: dict[str, list[Message]] = {}
        for message, name in [*report.delivered, *logged]:
            by_broadcaster.setdefault(name, []).append(message)
        for name, messages in by_broadcaster.items():
            # With no live broadcaster configured, log's deliveries are final, yet still
            # not "sent": no browser received them.
            state = LineState.SENT if manager.is_live(name) else LineState.LOGGED
            store.mark(line_ranges(messages), state, name)
        store.mark(line_ranges([m for m, _ in report.failed] + list(failed)), LineState.FAILED)
    except Exception:
        logger.exception("could not record broadcast state in SQL")


def _watched(runs: list[RunLines]) -> tuple[list[RunLines], list[RunLines]]:
    """(runs to publish, runs nobody watches): with occupancy gating, a run's lines are not
    published while its channel is unoccupied; unknown occupancy publishes everything."""
    occupancy = runtime.occupancy()
    if occupancy is None or not runs:
        return runs, []
    watched = occupancy.watched([run["channel"] for run in runs])
    if watched is None:
        return runs, []
    return ([run for run in runs if watched[run["channel"]]],
            [run for run in runs if not watched[run["channel"]]])


def _skip(runs: list[RunLines]) -> None:
    """Lines nobody watches: mark them skipped, count them and the messages they would
    have cost (packed for the first broadcaster, as they would have gone)."""
    if not runs:
        return
    limit = runtime.manager().broadcasters[0].max_message_bytes
    lines = sum(len(run["events"]) for run in runs)
    messages = sum(len(item.pack(limit)) for item in run_items(runs) if isinstance(item, LogBatch))
    try:
        runtime.store().mark([(run["run_id"], run["events"][0]["seq"], run["events"][-1]["seq"])
                              for run in runs], LineState.SKIPPED)
    except Exception:
        logger.exception("could not record skipped lines in SQL")
    runtime.state().count_today(keys.UNWATCHED, {keys.UNWATCHED_LINES: lines,
                                                 keys.UNWATCHED_MESSAGES: messages})


def _publish(batch: Batch, *, ordered: bool, live_only: bool, stats: GateStats) -> SendReport:
    """Send the batch turn by turn (``ordered``: each run's lines and admin events and each
    stream's app events after the ones before them, through the gate; otherwise all at once,
    each run's ``started``, lines and end in that order), leaving out runs nobody watches; the
    other admin events go with the first send."""
    manager = runtime.manager()
    events, others = run_events(batch["admin"])
    admin = admin_items(others)
    lanes: list[Lane] = [*batch["runs"], *app_lanes(batch.get("app", [])), *events]
    after_start = frozenset(batch.get("after_start", ()))

    def span(lane: Lane) -> Span | None:
        return lane_span(lane, after_start)

    gate = runtime.gate() if ordered else None
    if gate is not None:
        turns = gate.turns(lanes, stats, span)
    else:
        spans = {id(lane): covers for lane in lanes if (covers := span(lane)) is not None}
        turns = iter([in_lane_order([lane for lane in lanes if id(lane) in spans], spans)])
    reports = []
    for turn in turns:
        runs, unwatched = _watched([lane for lane in turn
                                    if not isinstance(lane, AppLane | RunEvent)])
        _skip(unwatched)
        watched = {id(run) for run in runs}
        items: list[Item] = []
        for lane in turn:  # in lane order: a run's started, its lines, its end
            if isinstance(lane, AppLane):
                items.extend(app_items(lane.events))
            elif isinstance(lane, RunEvent):
                items.extend(admin_items([lane.message]))
            elif id(lane) in watched:
                items.extend(run_items([lane]))
        if items or admin:
            reports.append(manager.send(items + admin, live_only=live_only))
            admin = []
        if gate is not None:
            gate.passed(turn, span)
    if admin:  # no lane had a turn: the admin events alone
        reports.append(manager.send(admin, live_only=live_only))
    return merge_reports(reports) if reports else SendReport()


def _count_app(report: SendReport, dead: Sequence[Message] = ()) -> None:
    """Count this attempt's app events: sent (delivered), failed (not delivered by it: final
    failures, and pending ones a retry takes) and dead-lettered (given up: final failures and
    ``dead``), logging each given up (they are stored nowhere)."""
    sent = sum(1 for m, _ in report.delivered if is_app_message_id(m.id))
    final = [(m, str(e)) for m, e in report.failed if is_app_message_id(m.id)]
    pending = [m for m in report.pending if is_app_message_id(m.id)]
    given_up = final + [(m, str(report.pending_errors.get(m.id, "")))
                        for m in dead if is_app_message_id(m.id)]
    for message, why in given_up[:_LOG_DEAD_APP_EVENTS]:
        logger.error("app event dead-lettered: channel=%s event=%s id=%s (%s)", message.channel,
                     message.event, message.id, why)
    if len(given_up) > _LOG_DEAD_APP_EVENTS:
        logger.error("%d more app event(s) dead-lettered with them",
                     len(given_up) - _LOG_DEAD_APP_EVENTS)
    runtime.state().count_pipeline({
        keys.PipelineCounter.APP_EVENTS_SENT: sent,
        keys.PipelineCounter.APP_EVENTS_FAILED: len(final) + len(pending),
        keys.PipelineCounter.APP_EVENTS_DEAD_LETTERED: len(given_up)})


def _count_gate(stats: GateStats, ordered: bool) -> None:
    if not ordered:
        return
    runtime.state().count_pipeline({
        keys.GateCounter.BATCHES: 1, keys.PipelineCounter.GATE_TIMEOUTS: stats.timeouts,
        keys.GateCounter.WAIT_MS: round(stats.waited_s * 1000),
        keys.gate_wait_le(stats.wait_bucket): 1})


class BroadcastTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # decided per call from the settings


def only_run(batch: Batch) -> str | None:
    """The run a batch is about, when it carries lines or events of one run only."""
    runs = {run["run_id"] for run in batch.get("runs") or ()}
    for message in batch.get("admin") or ():
        data = message.get("data")
        run = data.get("run_id") if isinstance(data, dict) else None
        if isinstance(run, str):
            runs.add(run)
        else:
            return None
    if batch.get("app"):
        return None
    return runs.pop() if len(runs) == 1 else None


@app.task(bind=True, base=BroadcastTask, name=TASK_NAME)
def broadcast(self: BroadcastTask, batch: Batch) -> dict[str, Any]:
    # What this task logs is about the batch's run, when it carries one (log lines in JSON).
    with logcontext.bound(run_id=only_run(batch)):
        return _broadcast(self, batch)


def _broadcast(self: BroadcastTask, batch: Batch) -> dict[str, Any]:
    settings = runtime.settings()
    attempt = self.request.retries
    live_only = bool(batch.get("live_only"))
    ordered = bool(batch.get("ordered", True)) and attempt == 0 and settings.order_wait_ms > 0
    stats = GateStats()
    started = time.perf_counter()
    report = _publish(batch, ordered=ordered, live_only=live_only, stats=stats)
    state = runtime.state()
    state.count_pipeline({keys.PipelineCounter.BROADCAST_TASKS: 1,
                          keys.PipelineCounter.BROADCAST_LINES: batch_lines(batch),
                          **publish_lag_counts(batch["runs"], (m for m, _ in report.delivered),
                                               time.time() * 1000)})
    _count_gate(stats, ordered)
    delivered_ids = {m.id for m, _ in report.delivered}
    pending_ids = {m.id for m in report.pending}
    logged = [(m, n) for m, n in report.logged if m.id not in delivered_ids]
    summary: dict[str, Any] = {
        "delivered": {}, "logged": len(logged), "failed": len(report.failed),
        "pending": len(report.pending), "attempt": attempt,
        "gate_wait_ms": round(stats.waited_s * 1000, 1),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    for _, name in report.delivered:
        summary["delivered"][name] = summary["delivered"].get(name, 0) + 1
    if not report.pending:
        record_outcome(report, logged=logged)
        _count_app(report)
        return summary
    reasons = "; ".join(sorted({str(e) for e in report.pending_errors.values()}))
    chance = report.next_chance_s
    can_help = chance is not None and chance <= settings.retry_backoff_max_s
    if can_help and attempt < settings.broadcast_max_retries:
        record_outcome(report, logged=logged)
        _count_app(report)
        countdown = max(compute_backoff(attempt, max_s=settings.retry_backoff_max_s,
                                        retry_after_s=report.retry_after_s), chance or 0.0)
        logger.warning("broadcast retry %d in %.1fs: %d message(s) not delivered live (%s)",
                       attempt + 1, countdown, len(report.pending), reasons)
        retry_live_only = live_only or any(m.id in pending_ids for m, _ in logged)
        raise self.retry(args=[batch_of(report.pending, live_only=retry_live_only)],
                         countdown=countdown, max_retries=settings.broadcast_max_retries)
    logged_ids = {m.id for m, _ in logged}
    if can_help:  # retries ran out
        dead = list(report.pending)
        why = f"after {attempt + 1} attempt(s)"
    else:  # no live broadcaster comes back by itself: what log took stays logged
        dead = [m for m in report.pending if m.id not in logged_ids]
        why = "no live broadcaster can take them until it is re-enabled or its quota resets"
    dead_ids = {m.id for m in dead}
    record_outcome(report, logged=[(m, n) for m, n in logged if m.id not in dead_ids],
                   failed=dead)
    _count_app(report, dead)
    if dead:
        state.count_pipeline({keys.PipelineCounter.DEAD_LETTERED: 1})
        logger.error("broadcast dead-lettered %s: %d message(s) not delivered (%s); the lines "
                     "are in SQL, marked failed (relaycast replay sends them again)", why,
                     len(dead), reasons)
        summary["dead_lettered"] = len(dead)
    return summary


__all__ = ["app_lanes", "batch_of", "broadcast", "enqueue_batch", "line_ranges", "record_outcome",
           "run_events"]
