"""The sweeper (celery beat, every ``RELAYCAST_SWEEP_INTERVAL_S``): SQL is the source of
truth, so lines still ``pending`` long after they were stored are broadcast again.

A Redis broker has a window in which a batch can vanish: a worker's BRPOP has taken the
message off the queue but Redis stops before the worker records it as unacknowledged (or
the broker restarts without persistence). The emitter's own retries cannot see that; the
sweeper can. Lines pending for more than ``RELAYCAST_SWEEP_AFTER_S`` (longer than a healthy
broadcast and its retries take) are re-enqueued, at most 5,000 per sweep and at most once
every ten minutes per line, so a provider outage cannot turn the sweeper into a retry
storm. A repeat reaches browsers at worst twice; they drop it by (run_id, seq).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broadcasters.wire import SWEEP_TASK, Channels, LineEvent, RunLines, contiguous, new_batch
from tasks import runtime
from tasks.broadcast import enqueue_batch
from tasks.celery_app import app

logger = logging.getLogger(__name__)

TASK_NAME = SWEEP_TASK
MAX_LINES_PER_SWEEP = 5000
RESWEEP_AFTER_S = 600.0


@app.task(name=TASK_NAME)
def sweep() -> dict[str, Any]:
    settings = runtime.settings()
    store = runtime.store()
    now_ms = int(time.time() * 1000)
    lines = store.sweepable(now_ms - int(settings.sweep_after_s * 1000),
                            now_ms - int(RESWEEP_AFTER_S * 1000), MAX_LINES_PER_SWEEP)
    if not lines:
        return {"requeued": 0}
    runs: dict[str, list[LineEvent]] = {}
    for line in lines:
        runs.setdefault(line.run_id, []).append(line.event())
    channels = Channels(settings.channel_prefix)
    # A run's pending lines can have holes (lines between them that have an outcome): each
    # contiguous range travels, and is marked, on its own.
    batch: list[RunLines] = [{"run_id": run_id, "channel": channels.logs(run_id), "events": piece}
                             for run_id, events in runs.items() for piece in contiguous(events)]
    enqueue_batch(new_batch(batch, ordered=False))
    store.mark_swept([(run["run_id"], run["events"][0]["seq"], run["events"][-1]["seq"])
                      for run in batch], now_ms)
    logger.warning("sweeper: re-enqueued %d line(s) of %d run(s) still pending after %.0fs",
                   len(lines), len(runs), settings.sweep_after_s)
    return {"requeued": len(lines), "runs": len(runs)}
