"""``relaycast demo``: the main job on embedded defaults, with no servers.

SQLite (the default file), in-memory shared state, the ``log`` broadcaster (Pusher first
when it is configured), and a real Celery worker consuming the ``broadcast`` and
``workflows`` queues in this process (``memory://`` broker, threads pool: not eager mode,
every task goes through the broker). With ``REDIS_URL`` set, the broker and the shared
state are Redis.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from broadcasters.wire import Channels
from config import Settings

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    run_id: str
    channel: str
    workflow: str
    status: str
    emitted: int
    stored: int
    broadcast: dict[str, int]
    pending: int
    failed: int
    dropped: int
    tasks_enqueued: int
    seconds: float
    database: str


def run_demo(settings: Settings, workflow: str = "etl", params: dict[str, Any] | None = None,
             timeout_s: float = 120.0) -> DemoResult:
    from celery.contrib.testing.worker import start_worker

    from broadcasters.wire import BROADCAST_QUEUE, WORKFLOWS_QUEUE
    from tasks.celery_app import app
    from workflows.base import REGISTRY
    from workflows.models import LineState, RunStatus
    from workflows.process import get_emitter
    from workflows.store import store_for

    task = REGISTRY[workflow]
    store = store_for(settings.database_url_or_default)
    run_id = f"demo-{workflow}-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      queues=[BROADCAST_QUEUE, WORKFLOWS_QUEUE], loglevel="WARNING",
                      shutdown_timeout=30.0):
        task.apply_async(kwargs={"run_id": run_id, **(params or {})})
        deadline = time.monotonic() + timeout_s
        status = "queued"
        ended = (RunStatus.SUCCEEDED, RunStatus.FAILED)
        while time.monotonic() < deadline:
            run = store.run(run_id)
            status = run.status if run is not None else status
            counts = store.broadcast_counts([run_id])
            pending = sum(n for (state, _), n in counts.items() if state == LineState.PENDING)
            if status in ended and pending == 0 and counts:
                break
            time.sleep(0.1)
    emitter = get_emitter()
    counts = store.broadcast_counts([run_id])
    broadcast: dict[str, int] = {}
    for (state, name), n in counts.items():
        if state in (LineState.SENT, LineState.LOGGED) and name:
            broadcast[name] = broadcast.get(name, 0) + n
    return DemoResult(
        run_id=run_id,
        channel=Channels(settings.channel_prefix).logs(run_id),
        workflow=workflow,
        status=status,
        emitted=emitter.stats.emitted,
        stored=sum(counts.values()),
        broadcast=broadcast,
        pending=sum(n for (state, _), n in counts.items() if state == LineState.PENDING),
        failed=sum(n for (state, _), n in counts.items() if state == LineState.FAILED),
        dropped=emitter.stats.dropped,
        tasks_enqueued=emitter.stats.tasks_enqueued,
        seconds=round(time.monotonic() - started, 2),
        database=_safe_url(settings.database_url_or_default),
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def render(result: DemoResult) -> str:
    per = ", ".join(f"{name}={n}" for name, n in sorted(result.broadcast.items())) or "none"
    return "\n".join([
        f"relaycast demo: workflow {result.workflow!r} run {result.run_id} {result.status} "
        f"in {result.seconds}s",
        f"  channel          {result.channel}",
        f"  lines emitted    {result.emitted}",
        f"  lines stored     {result.stored}   ({result.database})",
        f"  lines broadcast  {per}",
        f"  broadcast tasks  {result.tasks_enqueued} (one per flush interval at most, not one per line)",
        f"  pending/failed   {result.pending}/{result.failed}",
        f"  lines dropped    {result.dropped}",
        f"  read them back:  relaycast logs {result.run_id}",
    ])
