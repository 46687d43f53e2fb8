"""Workflow tasks: a Celery task whose body receives the run's :class:`LogStream`.

    @workflow("etl")
    def etl(log: LogStream, *, source: str = "demo") -> dict[str, int]:
        log.info("extracting", source=source)
        ...

Each run gets a run id (``run_id=`` when enqueued, else the task id), emits ``started``,
then ``finished`` or ``failed`` (with the duration and the error) on the admin channel,
records itself in the ``runs`` table, and flushes its lines when the task ends: it waits
(at most 10 s) until they are in SQL, not until the broker has them, so a broker outage
never holds a finished workflow; the process's flusher sends them when the broker returns.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task

from workflows import admin_events
from workflows.log_stream import LogStream

END_OF_TASK_FLUSH_S = 10.0


class WorkflowTask(Task):  # type: ignore[misc]
    """Base class of workflow tasks (queue ``workflows``)."""

    ignore_result = True
    workflow_name = "workflow"

    def __call__(self, *args: Any, run_id: str | None = None, **params: Any) -> Any:
        run_id = run_id or self.request.id or f"local-{int(time.time() * 1000)}"
        log = LogStream(run_id)
        started = time.monotonic()
        admin_events.emit("started", run_id=run_id, workflow=self.workflow_name, params=params,
                          channel=log.channel)
        try:
            result = self.run(log, *args, **params)
        except Exception as exc:
            duration_s = round(time.monotonic() - started, 3)
            log.error(f"workflow failed: {type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=20))
            admin_events.emit("failed", run_id=run_id, workflow=self.workflow_name,
                              duration_s=duration_s, error=f"{type(exc).__name__}: {exc}")
            log.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
            raise
        duration_s = round(time.monotonic() - started, 3)
        admin_events.emit("finished", run_id=run_id, workflow=self.workflow_name,
                          duration_s=duration_s)
        log.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
        return result


def workflow(name: str, **options: Any) -> Callable[[Callable[..., Any]], WorkflowTask]:
    """Register ``fn(log, **params)`` as the workflow ``name`` (task ``workflows.{name}``)."""
    from tasks.app import WORKFLOWS_QUEUE, app

    def register(fn: Callable[..., Any]) -> WorkflowTask:
        task: WorkflowTask = app.task(name=f"workflows.{name}", base=WorkflowTask,
                                      queue=WORKFLOWS_QUEUE, workflow_name=name, typing=False,
                                      **options)(fn)
        REGISTRY[name] = task
        return task

    return register


REGISTRY: dict[str, WorkflowTask] = {}
