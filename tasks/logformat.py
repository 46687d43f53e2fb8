"""Logs machines can read: ``RELAYCAST_LOG_FORMAT=json``.

Every line a relaycast process logs is then one JSON object: ``ts`` (ISO 8601 UTC, ms),
``level``, ``logger``, ``message`` and, where known, ``run_id``, ``task_id``, ``task`` (the
Celery task's name), ``broadcaster``, and ``exception`` (the formatted traceback) or
``stack``. Newlines inside a message stay inside its string: one record, one line. The
standard library only (:class:`JsonFormatter`, a ``logging.Formatter``).

Where the fields come from:

* ``task_id`` / ``task``: the Celery task executing in this thread (Celery's current task,
  read only when Celery is imported), or a Celery record that names one (the worker's
  ``Task … received`` line, logged by the main process before any child runs it);
* ``run_id``: the run a workflow or step task is running (:mod:`broadcasters.logcontext`,
  set by ``WorkflowTask.__call__`` and by the broadcast task for a batch of one run), else
  the ``run_id`` argument of the current task (Celery's own lines of a workflow task:
  ``succeeded``, ``raised``, retries), else that of the ``received`` line's arguments;
* ``broadcaster``: the broadcaster the manager is calling or flagging
  (:mod:`broadcasters.logcontext`), or the record's own ``extra={"broadcaster": ...}``.

Who installs it, only with ``json`` (``text`` changes nothing):

* the worker and beat (:func:`install_celery`, from ``tasks.celery_app``): Celery's
  ``after_setup_logger`` / ``after_setup_task_logger`` signals put the formatter on the
  handlers Celery made (root, ``celery.task``, the multiprocessing logger; prefork children
  inherit them). What Celery prints itself instead of logging is turned off: the worker's
  banner (``celeryd_init`` sets the worker quiet, and :func:`install_celery` logs one line
  in its place) and beat's (its ``Beat`` class is replaced with a quiet one that logs it).
  Python warnings raised before Celery sets logging up (Celery's own "running as root"
  ``SecurityWarning``) are logged as JSON too. Printed output of tasks is logged by Celery
  (``worker_redirect_stdouts``) as ``celery.redirected`` records, so JSON as well.
* the CLI and ``relaycast api`` / ``socketio`` (:func:`setup_cli`): the root logger's one
  handler on stderr; uvicorn's loggers are left unconfigured (``log_config=None``) so they
  reach it; the lines those commands print at start-up go through :func:`notice`.

One exception: Celery's ``worker: Warm shutdown (MainProcess)`` is written straight to the
terminal's file descriptor by its signal handler, so it stays plain text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from broadcasters.logcontext import current_broadcaster, current_run
from config import Settings

__all__ = ["JsonFormatter", "install_celery", "is_json", "json_handler", "notice", "setup_cli",
           "use_json"]

#: The record attributes a line may name itself (``extra=``), in the order they are written.
CONTEXT_FIELDS = ("run_id", "task_id", "task", "broadcaster")
#: A run id inside a task's kwargs as Celery shows them (``kwargsrepr``); run ids hold only
#: Pusher's channel characters, so the repr is the id itself.
_KWARGS_RUN_ID = re.compile(r"""['"]run_id['"]: ['"]([A-Za-z0-9_\-=@,.;]+)['"]""")
_CLI_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_json = False


def is_json() -> bool:
    """Does this process log JSON (:func:`setup_cli` or :func:`install_celery` said so)?"""
    return _json


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _current_task() -> Any:
    """The Celery task executing in this thread, if Celery is loaded at all."""
    state = sys.modules.get("celery._state")
    return state.get_current_task() if state is not None else None


def _task_context(record: logging.LogRecord) -> dict[str, str]:
    """task_id, task and run_id as the current task or the record's Celery data say."""
    found: dict[str, str] = {}
    task = _current_task()
    if task is not None:
        request = task.request
        if request.id:
            found["task_id"] = str(request.id)
            found["task"] = str(task.name)
            kwargs = request.kwargs or {}
            run_id = kwargs.get("run_id") if isinstance(kwargs, dict) else None
            if isinstance(run_id, str):
                found["run_id"] = run_id
            elif getattr(task, "begins_run", False):  # a workflow's run id is its task id
                found["run_id"] = str(request.id)
        return found
    data = getattr(record, "data", None)  # Celery's task lines: extra={"data": {"id", ...}}
    if isinstance(data, dict) and "id" in data and "name" in data:
        found["task_id"] = str(data["id"])
        found["task"] = str(data["name"])
        match = _KWARGS_RUN_ID.search(str(data.get("kwargs") or ""))
        if match:
            found["run_id"] = match.group(1)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - arguments that do not fit the format
            message = f"{record.msg!s} {record.args!r}"
        line: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname,
                                "logger": record.name, "message": message}
        context = {"run_id": current_run.get(), "broadcaster": current_broadcaster.get()}
        try:
            task = _task_context(record)
        except Exception:  # noqa: BLE001 - a line is written whatever its context
            task = {}
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None) or context.get(key) or task.get(key)
            if value:
                line[key] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(logger: logging.Logger) -> None:
    """Every handler of ``logger`` writes JSON."""
    for handler in logger.handlers:
        if not isinstance(handler, logging.NullHandler):
            handler.setFormatter(JsonFormatter())


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def _log_warnings_as_json(stream: TextIO | None) -> None:
    """Before Celery sets logging up: the root logger writes JSON, warnings included."""
    global _json
    _json = True
    root = logging.getLogger()
    if not any(not isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(json_handler(stream))
    logging.captureWarnings(True)


def setup_cli(settings: Settings) -> None:
    """The ``relaycast`` command's logging: ``RELAYCAST_LOG_LEVEL`` on stderr, as text or JSON."""
    global _json
    _json = settings.log_format == "json"
    if _json:
        logging.basicConfig(level=settings.log_level, handlers=[json_handler(sys.stderr)],
                            force=True)
        logging.captureWarnings(True)
    else:
        logging.basicConfig(level=settings.log_level, stream=sys.stderr, format=_CLI_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def notice(message: str, *, stream: TextIO | None = None, level: int = logging.INFO,
           logger: str = "relaycast") -> None:
    """A line a command prints for people (start-up notices): as it is, or as one JSON
    record on the same stream."""
    out = stream if stream is not None else sys.stderr
    if _json:
        record = logging.LogRecord(logger, level, "", 0, message, None, None)
        print(JsonFormatter().format(record), file=out, flush=True)
    else:
        print(message, file=out, flush=True)


def install_celery(app: Any) -> None:
    """JSON lines for ``celery worker`` and ``celery beat`` of ``app`` (see the module
    docstring); called by ``tasks.celery_app`` when ``RELAYCAST_LOG_FORMAT=json``."""
    from celery import signals

    def after_setup_logger(logger: logging.Logger, **_: Any) -> None:
        from celery.utils.log import get_multiprocessing_logger

        use_json(logger)
        multiprocessing_logger = get_multiprocessing_logger()
        if multiprocessing_logger is not None:
            use_json(multiprocessing_logger)

    def after_setup_task_logger(logger: logging.Logger, **_: Any) -> None:
        use_json(logger)

    def worker_init(instance: Any, **_: Any) -> None:
        instance.quiet = True  # no banner on stdout: one JSON line instead, below
        _log_warnings_as_json(sys.__stderr__)

    def worker_after_setup(sender: str, instance: Any, **_: Any) -> None:
        from celery import __version__

        queues = ", ".join(sorted(instance.app.amqp.queues.consume_from or {}))
        logging.getLogger("celery.apps.worker").info(
            "celery %s worker %s starting: queues %s, concurrency %s (%s), broker %s",
            __version__, sender, queues or "-", instance.concurrency,
            getattr(instance.pool_cls, "__module__", instance.pool_cls),
            instance.app.connection().as_uri())

    signals.after_setup_logger.connect(after_setup_logger, weak=False)
    signals.after_setup_task_logger.connect(after_setup_task_logger, weak=False)
    signals.celeryd_init.connect(worker_init, weak=False)
    signals.celeryd_after_setup.connect(worker_after_setup, weak=False)
    app.Beat = _quiet_beat(app)


def _quiet_beat(app: Any) -> Any:
    """``app``'s Beat class, quiet (no banner printed) and logging its start as JSON."""
    base = app.Beat

    class QuietBeat(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["quiet"] = True
            super().__init__(*args, **kwargs)

        def run(self) -> None:
            _log_warnings_as_json(sys.__stderr__)
            super().run()

        def setup_logging(self, colorize: bool | None = None) -> None:
            from celery import __version__

            super().setup_logging(colorize)
            logging.getLogger("celery.beat").info(
                "celery beat %s is starting: broker %s, schedule %s", __version__,
                self.app.connection().as_uri(), self.schedule)

    QuietBeat.__name__ = QuietBeat.__qualname__ = base.__name__
    return QuietBeat
