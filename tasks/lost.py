"""Runs whose worker died (celery beat, every min(30, ``RELAYCAST_RUN_LOST_AFTER_S``/4) s).

A run's task that dies with its worker (SIGKILL, OOM killer, a host that vanished) never
reaches ``on_failure``: nothing would ever end its run. Every process executing a task of
a run refreshes the run's heartbeat in the shared Redis state (:mod:`workflows.heartbeat`);
this task reads the heartbeats of every run still ``running`` in SQL and marks ``lost`` each
whose latest sign of life — its heartbeat, or its ``started_at`` when none was ever recorded
(a worker that died before its first heartbeat) — is older than the bound.

* **Exactly one announcement.** Marking is the conditional UPDATE ``finish_run`` uses
  (:meth:`~workflows.store.runs.Runs.mark_lost`): of two beats (or a beat and the run's real
  end) exactly one changes the row, and only that one writes the run's last line (an ERROR:
  ``run lost: …``) and emits the admin event ``lost`` (``reason: "worker lost"``,
  ``last_seq``, ``last_heartbeat_at``) through :func:`workflows.admin_events.emit`, so the
  ordering gate publishes it after the run's last line, as ``failed``.
* **A real end after ``lost`` wins.** A task that was alive after all (a step that waited in
  the queue longer than the bound, heartbeats that could not reach Redis) ends its run as
  usual: ``finish_run`` accepts a ``lost`` run, records ``succeeded``/``failed`` and
  announces ``finished``/``failed`` once. A redelivered first task (``acks_late`` with
  ``reject_on_worker_lost``) announces ``started`` again, which puts the run back to
  ``running`` (``start_run`` replaces an end older than the new start); a redelivered step
  logs a warning line and the run stays ``lost`` until its real end.
* **No false ``lost`` without shared state.** Without ``REDIS_URL`` no heartbeat can be seen
  across processes: nothing is marked. With Redis unreachable, this round does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broadcasters.backends import StateBackend, StateUnavailable
from broadcasters.wire import RUNS_LOST_TASK
from tasks import runtime
from tasks.celery_app import app
from workflows.heartbeat import read_heartbeats

if TYPE_CHECKING:
    from workflows.models import Run
    from workflows.store import LogStore

logger = logging.getLogger(__name__)

TASK_NAME = RUNS_LOST_TASK
LOST_EVENT = "lost"
LOST_REASON = "worker lost"
#: The longest pause between two checks.
MAX_CHECK_INTERVAL_S = 30.0
#: How long announcing waits for the run's last line to be in SQL.
FLUSH_S = 10.0


def check_interval_s(lost_after_s: float) -> float:
    """How often beat looks for lost runs: min(30, bound/4) seconds."""
    return min(MAX_CHECK_INTERVAL_S, lost_after_s / 4)


@dataclass(frozen=True)
class Stale:
    """A running run with no sign of life for longer than the bound."""

    run_id: str
    started_at: int  # epoch ms, as read (a run started again since is left alone)
    last_alive: float  # epoch seconds: its latest heartbeat, else its start
    heartbeat: bool  # whether a heartbeat was ever seen


def stale_runs(running: Sequence[tuple[str, int]], heartbeats: Mapping[str, float],
               now_s: float, lost_after_s: float) -> list[Stale]:
    """The decision: runs whose latest sign of life (heartbeat or, none yet, start) is more
    than ``lost_after_s`` before ``now_s``."""
    out = []
    for run_id, started_at in running:
        beat = heartbeats.get(run_id)
        last = max(beat if beat is not None else float("-inf"), started_at / 1000)
        if now_s - last > lost_after_s:
            out.append(Stale(run_id, started_at, last, beat is not None))
    return out


#: Announces a run this call marked lost (the admin event and its last line).
Announce = Callable[["Run", Stale, float], None]


def mark_lost_runs(store: LogStore, backend: StateBackend, announce: Announce, now_s: float,
                   lost_after_s: float) -> list[str]:
    """Mark lost every running run with no sign of life for ``lost_after_s``; announce each
    this call marked. Raises :class:`StateUnavailable` (nothing marked) when the heartbeats
    cannot be read."""
    running = store.running_runs()
    if not running:
        return []
    heartbeats = read_heartbeats(backend, [run_id for run_id, _ in running])
    lost = []
    for stale in stale_runs(running, heartbeats, now_s, lost_after_s):
        run = store.mark_lost(stale.run_id, stale.started_at, LOST_REASON,
                              at_ms=int(now_s * 1000))
        if run is None:
            continue  # ended, or started again, since it was read; or another beat won
        announce(run, stale, lost_after_s)
        lost.append(stale.run_id)
    return lost


def announce_lost(run: Run, stale: Stale, lost_after_s: float) -> None:
    """The run's last line (ERROR), then the admin event ``lost`` after it."""
    from broadcasters.wire import LAST_SEQ_KEY
    from workflows import admin_events
    from workflows.log_stream import LogStream
    from workflows.process import get_emitter

    silent_s = round((run.finished_at or 0) / 1000 - stale.last_alive, 1)
    since = "its last heartbeat" if stale.heartbeat else "it started (no heartbeat ever)"
    message = (f"run lost: no sign of life from a worker running it for {silent_s:g} s since "
               f"{since} (RELAYCAST_RUN_LOST_AFTER_S={lost_after_s:g}); its worker died")
    emitter = get_emitter()
    # A run id no channel can carry (ValueError): the event still goes out.
    with contextlib.suppress(ValueError):
        LogStream(run.run_id).error(message, reason=LOST_REASON,
                                    last_heartbeat_at=stale.last_alive if stale.heartbeat
                                    else None)
    emitter.flush(FLUSH_S, wait_for_broker=False)
    data: dict[str, Any] = {
        "run_id": run.run_id, "workflow": run.workflow, "reason": LOST_REASON,
        "error": LOST_REASON,
        "duration_s": round(((run.finished_at or run.started_at) - run.started_at) / 1000, 3),
        "last_heartbeat_at": stale.last_alive if stale.heartbeat else None}
    try:
        data[LAST_SEQ_KEY] = runtime.store().last_seq(run.run_id)
    except Exception as exc:  # noqa: BLE001 - announced anyway, unordered
        logger.warning("run %s: last seq unknown (%s); lost announced unordered", run.run_id, exc)
    admin_events.emit(LOST_EVENT, **data)
    emitter.flush(FLUSH_S, wait_for_broker=False)
    logger.warning("run %s (%s) lost: %s", run.run_id, run.workflow, message)


@app.task(name=TASK_NAME)
def runs_lost() -> dict[str, Any]:
    settings = runtime.settings()
    if not settings.redis_url:
        return {"lost": [], "skipped": "no REDIS_URL: heartbeats are not shared, runs are "
                "never marked lost"}
    state = runtime.state()
    try:
        lost = mark_lost_runs(runtime.store(), state.backend, announce_lost, time.time(),
                              settings.run_lost_after_s)
    except StateUnavailable as exc:
        state.note_unavailable("read run heartbeats", exc)
        return {"lost": [], "skipped": f"shared state unavailable: {exc}"}
    return {"lost": lost}
