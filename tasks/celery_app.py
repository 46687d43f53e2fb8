"""The Celery app: ``celery -A relaycast worker -Q broadcast,workflows`` (``-A tasks`` works
too, where no ``tasks.py`` of the user's shadows this package).

Choices, and why:

* **Queues.** ``broadcast`` (short tasks, provider calls) and ``workflows`` (long user
  work) so a burst of workflows can never starve live logs; run them in separate workers
  in production.
* **Late acks + reject on worker lost** for the broadcast task: a worker killed mid-batch
  leaves its message unacknowledged and Redis hands it to another worker. Repeats are
  harmless: clients de-duplicate by (run_id, seq) and Ably by message id.
* **visibility_timeout = RELAYCAST_VISIBILITY_TIMEOUT_S (300 s).** With Redis, an
  unacknowledged message is redelivered only after this long. Broadcast tasks finish in
  milliseconds, so 5 minutes is far above any honest run time (and above the longest retry
  countdown, ``RELAYCAST_RETRY_BACKOFF_MAX_S``, which would otherwise cause duplicate
  deliveries), while a crashed worker's batch still reaches browsers within minutes
  (the lines were in SQL all along). Celery's default of one hour is too long for live logs.
  kombu only looks for such messages every ``unacked_restore_interval`` x
  ``unacked_restore_throttle`` seconds (100 s by default); relaycast sweeps every few seconds.
* **Producers never hang.** The emitter enqueues from its flusher thread, but a flusher
  stuck for ever would still stop live logs: publishing retries at most twice over about
  half a second and socket timeouts are 2 s, after which the emitter keeps the batch and
  tries again later.
* **A result backend only for chords.** Broadcast results are ignored (Flower shows task
  states from events, which workers send: ``worker_send_task_events``). A workflow run as a
  chord needs its shards' results for the callback: Redis when ``REDIS_URL`` is set (native
  chord support, results expire after an hour; the broker's own Redis when it is one), the
  process's memory for the in-process demo, else the SQL database. Only steps of a canvas
  store results.
* **Wiring.** Importing this module hands the emitter of every process its ``enqueue``
  (publish one broadcast task): the ``workflows`` package never imports Celery's app. A
  process that did not import it finds :func:`emitter_factory` by name (the entry point
  ``relaycast.emitter`` / ``celery``) on its first flush, when a broker is configured.
* **Prefork children start clean** without a ``worker_process_init`` handler: billiard forks
  with ``os.fork()``, so the after-fork registry (:mod:`workflows.forks`) has each child
  forget its parent's manager, state client, gate, stores and emitter before its first task.
* **Logs machines can read.** With ``RELAYCAST_LOG_FORMAT=json`` the worker and beat log one
  JSON object per line, with the run and task each line is about (:mod:`tasks.logformat`,
  hooked to Celery's ``after_setup_logger`` / ``after_setup_task_logger`` signals).
* **The user's workflows.** The modules in ``RELAYCAST_WORKFLOWS`` are imported once the app
  exists (the current directory first, as for ``-A``), in the worker, beat and any process
  that builds the app; a module that fails stops start-up with one line naming it. The
  examples register only where asked (``workflows.examples`` in that list).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Celery
from kombu import Queue

from broadcasters.keys import PipelineCounter
from broadcasters.wire import (
    BROADCAST_QUEUE,
    HEALTH_TASK,
    OCCUPANCY_TASK,
    PRUNE_TASK,
    RELAYCAST_TASKS,
    RUN_FINISHED_TASK,
    RUNS_LOST_TASK,
    SWEEP_TASK,
    WORKFLOW_TASKS,
    WORKFLOWS_QUEUE,
)
from config import ConfigError, Settings, load_settings
from tasks import logformat
from workflows import process
from workflows.emitter import Emitter
from workflows.registry import import_workflows

logger = logging.getLogger(__name__)

__all__ = ["BROADCAST_QUEUE", "WORKFLOWS_QUEUE", "app", "beat_schedule", "create_app"]

RESULT_EXPIRES_S = 3600


def result_backend(settings: Settings, broker: str) -> str:
    """Where chord members' results go (see the module docstring): the broker's Redis (a
    step's result is part of the work in flight), else REDIS_URL, else memory for the
    in-process demo, else SQL."""
    if broker.startswith(("redis://", "rediss://", "unix://")):
        return broker
    if settings.redis_url:
        return settings.redis_url
    if broker.startswith("memory://"):
        return "cache+memory://"
    return "db+" + settings.database_url_or_default


def create_app(settings: Settings) -> Celery:
    broker = settings.broker_url or "memory://localhost/"
    app = Celery("relaycast", broker=broker,
                 include=["tasks.broadcast", "tasks.health", "tasks.sweep", "tasks.occupancy",
                          "tasks.prune", "tasks.lost", "workflows.base"])
    transport_options: dict[str, object] = {"visibility_timeout": settings.visibility_timeout_s}
    if broker.startswith("memory://"):
        transport_options["polling_interval"] = 0.01
    if broker.startswith(("redis://", "rediss://", "unix://")):
        transport_options.update({
            "max_retries": 2, "socket_timeout": 2.0, "socket_connect_timeout": 2.0,
            # kombu sweeps for unacknowledged messages only every interval x throttle
            # seconds (10 x 10 by default): a crashed worker's batch would wait ~100 s on
            # top of the visibility timeout. Sweep every few seconds instead (one cheap
            # ZRANGEBYSCORE on the unacked index).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        })
    app.conf.update(
        task_queues=(Queue(BROADCAST_QUEUE), Queue(WORKFLOWS_QUEUE)),
        task_default_queue=WORKFLOWS_QUEUE,
        task_routes={RUN_FINISHED_TASK: {"queue": WORKFLOWS_QUEUE},
                     RELAYCAST_TASKS: {"queue": BROADCAST_QUEUE},
                     WORKFLOW_TASKS: {"queue": WORKFLOWS_QUEUE}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=result_backend(settings, broker),
        result_expires=RESULT_EXPIRES_S,
        result_extended=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_prefetch_multiplier=4,
        broker_transport_options=transport_options,
        broker_connection_timeout=2.0,
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1,
                                   "interval_step": 0.2, "interval_max": 0.3},
        worker_hijack_root_logger=True,
        beat_schedule=beat_schedule(settings),
        timezone="UTC",
        enable_utc=True,
    )
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat's periodic tasks; each expires after its own interval, so a beat that could not
    reach the workers for a while does not leave a pile of them behind. Retention runs unless
    everything is kept (``RELAYCAST_RETENTION_DAYS=0``); the lost-run check always (it does
    nothing without ``REDIS_URL``)."""
    every = {HEALTH_TASK: settings.health_interval_s,
             SWEEP_TASK: settings.sweep_interval_s,
             # Runs whose worker died: min(30, bound/4) s, so one is marked lost within
             # 1.25 bounds of its last heartbeat (tasks.lost).
             RUNS_LOST_TASK: min(30.0, settings.run_lost_after_s / 4)}
    if settings.occupancy == "webhooks":
        every[OCCUPANCY_TASK] = settings.occupancy_reconcile_s
    if settings.retention_days:
        every[PRUNE_TASK] = settings.prune_interval_s
    return {name.replace(".", "-"): {"task": name, "schedule": seconds,
                                     "options": {"expires": seconds}}
            for name, seconds in every.items()}


def emitter_factory(settings: Settings) -> Callable[[], Emitter]:
    """How each process builds its emitter: SQL from the settings, batches to this app."""

    def build() -> Emitter:
        from tasks import runtime
        from tasks.broadcast import enqueue_batch

        def report_drops(count: int) -> None:
            runtime.state().count_pipeline({PipelineCounter.LINES_DROPPED: count})

        return Emitter.from_settings(settings, enqueue=enqueue_batch, on_drops=report_drops)

    return build


def _stop(exc: ConfigError) -> NoReturn:
    print(f"relaycast: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def _load() -> tuple[Settings, Celery]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _stop(exc)
    process.configure(emitter_factory(settings))
    app = create_app(settings)
    if settings.log_format == "json":
        logformat.install_celery(app)
    return settings, app


_settings, app = _load()
try:
    import_workflows(_settings.workflows)
except ConfigError as exc:
    _stop(exc)

