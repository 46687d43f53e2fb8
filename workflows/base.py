"""Workflow tasks: Celery tasks whose body receives the run's :class:`LogStream`.

    @workflow("etl")
    def etl(log: LogStream, *, source: str = "demo") -> dict[str, int]:
        log.info("extracting", source=source)
        ...

A run may be one task or a whole canvas. A workflow that returns a Celery canvas (a
``chain``, ``group`` or ``chord`` of :func:`step` tasks) continues its run in it:

    @step("fanout.shard")
    def shard(log: LogStream, *, shard: int) -> int: ...

    @step("fanout.summary")
    def summary(log: LogStream, results: list[int]) -> int: ...

    @workflow("fanout")
    def fanout(log: LogStream, *, shards: int = 8) -> Signature:
        return chord([shard.s(shard=i) for i in range(shards)], summary.s())

**The run id travels in the kwargs**: relaycast adds ``run_id=`` to every step of the
returned canvas (visible in Flower as any argument is), and every step logs to that run,
whichever worker process or host it lands on (its lines are numbered where they are stored,
see :meth:`workflows.store.LogStore.append`). A step can also be enqueued by hand with
``run_id=`` given.

**Lifecycle, exactly once per run**: ``started`` when the run's first task begins (not on
its retries); ``finished`` when the whole run ends — the task itself, or for a canvas the
``relaycast.run_finished`` task relaycast chains after it (after the chord callback or the
chain's last link); ``failed`` when any task of the run fails for good (``on_failure``:
after its retries, not on each). Ending a run is one conditional UPDATE in SQL, so of
several shards failing at once exactly one announces the failure (the others still log
their error into the run). Each is an admin event on ``{prefix}admin-events`` and a row in
the ``runs`` table. ``lost`` when the run's worker died (no ``on_failure`` ever runs): while
a task of the run executes, its process keeps the run's heartbeat fresh
(:mod:`workflows.heartbeat`), and the ``relaycast.runs_lost`` beat task (:mod:`tasks.lost`)
marks a running run without one for ``RELAYCAST_RUN_LOST_AFTER_S`` — a real end recorded
later still wins.

Runs are registered with :func:`celery.shared_task`: this module never imports the Celery
app; ``tasks`` includes the example workflows and routes ``workflows.*`` to the
``workflows`` queue.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import time
import traceback
import typing
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task, shared_task
from celery.canvas import Signature, _chain, _chord, group

from broadcasters.logcontext import current_run
from broadcasters.wire import LAST_SEQ_KEY, RUN_FINISHED_TASK, workflow_task_name
from workflows import admin_events, capture, heartbeat
from workflows.log_stream import LogStream
from workflows.models import RunStatus
from workflows.process import get_emitter

logger = logging.getLogger(__name__)

#: How long a task's end waits for its lines to be in SQL (not for the broker).
END_OF_TASK_FLUSH_S = 10.0
#: Keyword arguments relaycast itself passes to workflow tasks.
RESERVED_PARAMS = frozenset({"run_id"})


class InvalidParams(ValueError):
    """Parameters a workflow cannot take; raised where they are given (the CLI, the API)."""


class WorkflowTask(Task):  # type: ignore[misc]
    """Base class of workflow tasks: a run's first task (``@workflow``) and its steps."""

    workflow_name = "workflow"
    #: True for the task that begins a run; False for a step of a run's canvas.
    begins_run = True

    def __call__(self, *args: Any, run_id: str | None = None, **params: Any) -> Any:
        if run_id is None:
            if not self.begins_run:
                raise InvalidParams(f"step {self.name} needs run_id= (the run it belongs to)")
            run_id = self.request.id or f"local-{int(time.time() * 1000)}"
        log = LogStream(run_id)
        # The run's sign of life while this task executes (workflows.heartbeat): from this
        # process, not from its lines, so a quiet step is never taken for a dead one.
        heartbeat.enter(run_id)
        # Every line this process logs meanwhile is about the run (RELAYCAST_LOG_FORMAT=json).
        about = current_run.set(run_id)
        try:
            if (self.request.delivery_info or {}).get("redelivered"):
                log.warning(f"{self.name} redelivered: its earlier attempt died with its "
                            "worker; running it again", task=self.name)
            if self.begins_run and not self.request.retries:
                admin_events.emit("started", run_id=run_id, workflow=self.workflow_name,
                                  params=params, channel=log.channel)
            # The body's own logging records and printed lines are lines of the run too.
            token = capture.begin(log.run_id)
            try:
                result = self.run(log, *args, **params)
            finally:
                capture.end(token)
            if isinstance(result, Signature):
                return self._continue_in(result, run_id, log)
            if self.begins_run:
                end_run(run_id, self.workflow_name, RunStatus.SUCCEEDED)
            else:
                log.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
            return result
        finally:
            current_run.reset(about)
            heartbeat.leave(run_id)

    def _continue_in(self, canvas: Signature, run_id: str, log: LogStream) -> dict[str, Any]:
        """Run ``canvas`` as the rest of this run, then end it with ``relaycast.run_finished``."""
        attach_run(canvas, run_id)
        finish = run_finished.si(run_id=run_id, workflow=self.workflow_name)
        # Its lines and its start are in SQL before any step can end the run.
        log.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
        result = (canvas | finish).apply_async()
        log.debug("continues in a canvas", canvas=type(canvas).__name__, canvas_id=result.id)
        return {"run_id": run_id, "canvas_id": result.id}

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Mapping[str, Any],
                 einfo: Any) -> None:
        """A ``warning`` line: ``retry 1/3 in 4 s: ConnectionError: …`` (the attempt coming,
        of ``max_retries``; the countdown of Celery's ``Retry``)."""
        run_id = kwargs.get("run_id") or task_id
        attempt = (self.request.retries or 0) + 1
        max_retries = getattr(self, "override_max_retries", self.max_retries)
        countdown_s = retry_countdown_s(einfo)
        try:
            LogStream(run_id).warning(
                retry_line(attempt, max_retries, countdown_s, exc), task=self.name,
                attempt=attempt, max_retries=max_retries, countdown_s=countdown_s)
        except Exception:  # noqa: BLE001 - an invalid run id is reported by on_failure
            logger.warning("could not log the retry of %s", task_id)

    def on_failure(self, exc: BaseException, task_id: str, args: Any,
                   kwargs: Mapping[str, Any], einfo: Any) -> None:
        run_id = kwargs.get("run_id") or (task_id if self.begins_run else None)
        error = f"{type(exc).__name__}: {exc}"
        try:
            log = LogStream(str(run_id))
        except ValueError:
            logger.error("workflow %s failed, and its run id %r is invalid: %s",
                         self.workflow_name, run_id, error)
            return
        trace = getattr(einfo, "traceback", None) or "".join(
            traceback.format_exception(exc, limit=20))
        log.error(f"workflow {self.workflow_name} failed in {self.name}: {error}",
                  traceback=str(trace)[-20_000:])
        end_run(log.run_id, self.workflow_name, RunStatus.FAILED, error=error[:2000])


def retry_countdown_s(einfo: object) -> float | None:
    """Seconds until the retry Celery scheduled: ``Retry.when`` (a countdown or an eta) of
    ``on_retry``'s ``einfo``, whose ``exception`` wraps the ``Retry`` (billiard's
    ``ExceptionWithTraceback``, the ``Retry`` in ``.exc``)."""
    raised = getattr(einfo, "exception", None)
    when = getattr(raised, "when", None)
    if when is None:
        when = getattr(getattr(raised, "exc", None), "when", None)
    if isinstance(when, int | float) and not isinstance(when, bool):
        return float(when)
    if isinstance(when, datetime.datetime):
        return max(0.0, (when - datetime.datetime.now(when.tzinfo)).total_seconds())
    return None


def retry_line(attempt: int, max_retries: int | None, countdown_s: float | None,
               exc: BaseException) -> str:
    """``retry 1/3 in 4 s: ConnectionError: reset`` (``∞`` for no limit, ``?`` for no countdown)."""
    limit = "∞" if max_retries is None else str(max_retries)
    delay = "?" if countdown_s is None else f"{round(countdown_s, 1):g}"
    return f"retry {attempt}/{limit} in {delay} s: {type(exc).__name__}: {exc}"


def end_run(run_id: str, workflow: str, status: RunStatus, error: str | None = None) -> bool:
    """End the run once: record it in SQL and, if this call ended it, announce it.

    Returns whether this call ended the run. The run's lines (and its start) are flushed to
    SQL first. If SQL is unreachable the end is announced anyway: a repeated ``finished`` is
    better than a lost one (clients treat the event as a status, not a counter).

    The event carries ``last_seq``, the run's last line when it ended (its counter in SQL):
    the ordering gate publishes the end after that line (:func:`broadcasters.ordering.
    admin_span`). Without SQL there is none, and the end goes out unordered.
    """
    emitter = get_emitter()
    emitter.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
    duration_s: float | None = None
    last_seq: int | None = None
    try:
        store = emitter.writer.store()
        run = store.finish_run(run_id, status, error, workflow=workflow)
        if run is not None:
            last_seq = store.last_seq(run_id)
    except Exception as exc:  # noqa: BLE001 - fail open: announce it
        logger.warning("run %s: could not record its end in SQL (%s: %s); announcing it anyway",
                       run_id, type(exc).__name__, exc)
    else:
        if run is None:
            return False
        if run.finished_at is not None:
            duration_s = round((run.finished_at - run.started_at) / 1000, 3)
    data: dict[str, Any] = {"run_id": run_id, "workflow": workflow, "duration_s": duration_s}
    if last_seq is not None:
        data[LAST_SEQ_KEY] = last_seq
    if error is not None:
        data["error"] = error
    admin_events.emit("finished" if status is RunStatus.SUCCEEDED else "failed", **data)
    emitter.flush(END_OF_TASK_FLUSH_S, wait_for_broker=False)
    return True


@shared_task(name=RUN_FINISHED_TASK, ignore_result=True)
def run_finished(*, run_id: str, workflow: str) -> bool:
    """The last link of a run's canvas: every step succeeded."""
    return end_run(run_id, workflow, RunStatus.SUCCEEDED)


def attach_run(canvas: Signature, run_id: str) -> None:
    """Add ``run_id=`` to every workflow step in ``canvas`` (chains, groups, chords, nested)."""
    if isinstance(canvas, _chord):
        attach_run_all(canvas.tasks, run_id)
        if canvas.body is not None:
            attach_run(canvas.body, run_id)
    elif isinstance(canvas, _chain | group):
        attach_run_all(canvas.tasks, run_id)
    elif canvas.task in STEPS:
        canvas.kwargs["run_id"] = run_id


def attach_run_all(tasks: Any, run_id: str) -> None:
    for task in (tasks.tasks if isinstance(tasks, group) else tasks):
        attach_run(task, run_id)


def _register(name: str, fn: Callable[..., Any], begins_run: bool, options: dict[str, Any]
              ) -> Any:
    # Only steps keep their result: a chord's callback needs its members'.
    options = {"ignore_result": begins_run, **options}
    return shared_task(name=workflow_task_name(name), base=WorkflowTask, workflow_name=name,
                       begins_run=begins_run, typing=False, **options)(fn)


def workflow(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn(log, **params)`` as the workflow ``name`` (task ``workflows.{name}``)."""

    def register(fn: Callable[..., Any]) -> Any:
        task = _register(name, fn, True, options)
        REGISTRY[name] = task
        FUNCTIONS[name] = fn
        return task

    return register


def step(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn(log, *args, **kwargs)`` as a step of a run's canvas (``workflows.{name}``)."""

    def register(fn: Callable[..., Any]) -> Any:
        task = _register(name, fn, False, options)
        STEPS.add(workflow_task_name(name))
        return task

    return register


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for the workflow ``name``, checked against its function's signature.

    Refused (:class:`InvalidParams`, one line saying which and why): relaycast's own names
    (``run_id``); names the workflow does not take; a value whose type is not the one the
    parameter is annotated with (or, unannotated, its default's); an ``int`` is a fine
    ``float``, a ``bool`` is not an ``int``.
    """
    fn = FUNCTIONS[name]
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: use defaults
        hints = {}
    accepted = {p.name: p for p in list(signature.parameters.values())[1:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    out = {}
    for key, value in params.items():
        if key in RESERVED_PARAMS:
            raise InvalidParams(f"{key} is set by relaycast (use --run-id to choose the run id)")
        parameter = accepted.get(key)
        if parameter is None:
            if takes_any:
                out[key] = value
                continue
            known = ", ".join(sorted(accepted)) or "none"
            raise InvalidParams(f"workflow {name!r} takes no parameter {key!r} (it takes: {known})")
        kind = hints.get(key)
        if kind not in _CHECKED:
            default = parameter.default
            kind = type(default) if type(default) in _CHECKED else None
        if kind is not None and type(value) not in _CHECKED[kind]:
            raise InvalidParams(f"{key} must be {kind.__name__}, not {type(value).__name__} "
                                f"{value!r}")
        out[key] = value
    return out


#: Parameter types checked where parameters are given, and the value types each accepts.
_CHECKED: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,),
                                         bool: (bool,)}

#: Workflows by name (a run's first task).
REGISTRY: dict[str, Any] = {}
#: Their functions, for checking parameters where they are given.
FUNCTIONS: dict[str, Callable[..., Any]] = {}
#: Task names of steps (tasks that continue a run).
STEPS: set[str] = set()
