"""Capture: while a workflow or step task runs, its own ``logging`` records and printed lines
become lines of its run.

How (one context variable, one handler, two stream wrappers):

* :data:`current` (a :class:`contextvars.ContextVar`) holds the running task's run. It is set
  when the task body starts (:func:`begin`, called by ``WorkflowTask.__call__``) and reset
  when it ends (:func:`end`). A context variable is per thread (and per asyncio task), so
  tasks running at once in one process (``-P threads``, ``-P gevent``) never see each
  other's run; a thread the task starts itself has its own, empty context (not captured).
* A :class:`CaptureHandler` on the root logger (and one on ``celery.task``, which Celery
  sets to ``propagate = False``, so that ``get_task_logger(__name__)`` records are seen too)
  reads it: with no run set it returns at once. A record at or above ``RELAYCAST_CAPTURE_LEVEL``
  becomes a line: level mapped (DEBUG → ``debug`` … CRITICAL → ``critical``), the logger's
  name in ``data["logger"]``, the formatted ``exc_info`` in ``data["traceback"]``. A record
  is marked when captured, so one passing several capture handlers is stored once. The
  logger's own level still applies first: ``RELAYCAST_CAPTURE_LEVEL=DEBUG`` captures the
  DEBUG records a logger lets through.
* ``sys.stdout`` / ``sys.stderr`` are wrapped once (:class:`RunStream`): every write still
  goes where it went (under a worker, Celery's ``LoggingProxy``: ``worker_redirect_stdouts``
  logs it as ``celery.redirected``); inside a task, each complete line is also a line of the
  run, ``info`` from stdout and ``error`` from stderr, with ``data["stream"]``. Celery's
  redirection uses ONE proxy for both streams (``celery.app.log.redirect_stdouts_to_logger``)
  and logs each ``write`` call as its own record, so the records cannot tell stdout from
  stderr and split ``print("a", "b")`` into three: the streams are captured here, before
  Celery's proxy, and ``celery.redirected`` records are never captured. A partial line waits
  for its newline (or the task's end); blank lines are skipped.

Never captured (:data:`EXCLUDED`, a logger and its children): relaycast's own loggers
(``workflows``, ``broadcasters``, ``relaycast``, ``config``, and ``tasks.*`` — relaycast's
task modules; a bare ``tasks`` logger is a user's ``tasks.py``, the Celery convention, and
is captured), Celery's machinery (``celery`` — the trace's "Task … succeeded", the worker,
``celery.redirected``; a ``get_task_logger(name)`` logger is named ``name``, not
``celery.*``), and the infrastructure relaycast itself drives from a task's thread
(``billiard``, ``kombu``, ``amqp``, ``vine``, ``redis``, ``sqlalchemy``, ``alembic``,
``urllib3``, ``httpx``, ``httpcore``, ``pusher``, ``ably``, ``socketio``, ``engineio``). So
the emitter's own logging never re-enters it. The emitter's flusher thread has no run set.

Capturing never raises into the workflow: a record or line that cannot be captured is
dropped (counted in :data:`failures`).

Settings: ``RELAYCAST_CAPTURE`` (``logging,stdout`` default, ``logging``, ``stdout``,
``off``) and ``RELAYCAST_CAPTURE_LEVEL`` (``INFO`` default), read once per process on the
first task (or set with :func:`configure`).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO, cast

from workflows.emitter import Emitter
from workflows.process import get_emitter

__all__ = ["EXCLUDED", "CaptureHandler", "RunStream", "begin", "configure", "current", "end",
           "handler", "is_excluded", "task_handler"]

logger = logging.getLogger(__name__)

#: Loggers (and their children) never captured; see the module docstring.
EXCLUDED = ("workflows", "broadcasters", "relaycast", "config", "celery", "billiard", "kombu",
            "amqp", "vine", "redis", "sqlalchemy", "alembic", "urllib3", "httpx", "httpcore",
            "pusher", "ably", "socketio", "engineio")
#: Loggers whose children are never captured, though the logger itself is: ``tasks.*`` is
#: relaycast's task modules, a bare ``tasks`` a user's ``tasks.py``.
EXCLUDED_CHILDREN = ("tasks",)
#: Set on a record once captured (a record passing several capture handlers is stored once).
MARK = "relaycast_captured"
#: A printed line longer than this without a newline is stored in parts.
MAX_PENDING_CHARS = 64 * 1024

_INFO = logging.INFO
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
           logging.ERROR: "error", logging.CRITICAL: "critical"}
_EXCLUDED_NAMES = frozenset(EXCLUDED)
_EXCLUDED_PREFIXES = tuple(f"{name}." for name in (*EXCLUDED, *EXCLUDED_CHILDREN))
#: Verdicts per logger name (bounded by the loggers that exist, as logging's own table).
_verdicts: dict[str, bool] = {}

#: Records and printed lines that could not be captured (dropped, never raised).
failures = 0


def is_excluded(name: str) -> bool:
    """Whether records of the logger ``name`` are never captured."""
    verdict = _verdicts.get(name)
    if verdict is None:
        verdict = name in _EXCLUDED_NAMES or name.startswith(_EXCLUDED_PREFIXES)
        _verdicts[name] = verdict
    return verdict


def level_name(levelno: int) -> str:
    """A ``logging`` level number as a line's level (the nearest level at or below it)."""
    name = _LEVELS.get(levelno)
    if name is not None:
        return name
    for number in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= number:
            return _LEVELS[number]
    return "debug"


@dataclass(frozen=True)
class Config:
    """What this process captures."""

    logging: bool = True
    stdout: bool = True
    level: int = _INFO

    @classmethod
    def parse(cls, capture: str, level: str | int = "INFO") -> Config:
        """From ``RELAYCAST_CAPTURE`` (``logging,stdout`` / ``logging`` / ``stdout`` / ``off``)
        and a level name or number; ValueError for anything else."""
        parts = {part.strip().lower() for part in capture.split(",") if part.strip()}
        if parts == {"off"}:
            parts = set()
        elif not parts or not parts <= {"logging", "stdout"}:
            raise ValueError("use logging,stdout, logging, stdout or off")
        number = level if isinstance(level, int) else logging.getLevelNamesMapping().get(
            level.strip().upper())
        if number is None:
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return cls(logging="logging" in parts, stdout="stdout" in parts, level=number)

    @property
    def off(self) -> bool:
        return not (self.logging or self.stdout)


class Run:
    """The run a task captures into (the value of :data:`current`)."""

    __slots__ = ("_pending", "emit", "emitter", "level", "logging", "run_id", "stdout")

    def __init__(self, emitter: Emitter, run_id: str, config: Config) -> None:
        self.emitter = emitter
        self.emit = emitter.emit
        self.run_id = run_id
        self.level = config.level if config.logging else sys.maxsize
        self.logging = config.logging
        self.stdout = config.stdout
        self._pending: dict[str, str] = {}

    def write(self, stream: str, level: str, text: str) -> None:
        """Printed ``text``: every complete line becomes a line of the run."""
        pending = self._pending.pop(stream, "") + text
        if "\n" not in pending:
            if len(pending) > MAX_PENDING_CHARS:
                self._line(stream, level, pending)
            elif pending:
                self._pending[stream] = pending
            return
        *lines, rest = pending.split("\n")
        for line in lines:
            self._line(stream, level, line)
        if rest:
            self._pending[stream] = rest

    def finish(self) -> None:
        """Store what was printed without a final newline."""
        for stream, text in list(self._pending.items()):
            self._line(stream, _STREAM_LEVELS.get(stream, "info"), text)
        self._pending.clear()

    def _line(self, stream: str, level: str, line: str) -> None:
        line = line.rstrip("\r")
        if line.strip():
            self.emit(self.run_id, level, line, {"stream": stream})


#: The run of the task running in this context; None outside a task (nothing is captured).
current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("relaycast_run", default=None)
_get_current = current.get


class CaptureHandler(logging.Handler):
    """Turns the records of the task running in this context into lines of its run.

    ``handle`` is overridden (no handler lock, no filters): the emitter is thread-safe, and
    with no run set a record costs one context-variable read. A record it captures is marked
    (:data:`MARK`), and a marked record is not captured again; the root logger's instance
    (``last_stop=True``) only reads the mark: the root is where a record's propagation ends,
    and adding a key to a record's ``__dict__`` grows it (a third of the handler's cost).
    """

    def __init__(self, level: int = logging.NOTSET, *, last_stop: bool = False) -> None:
        super().__init__(level)
        self.last_stop = last_stop

    def handle(self, record: logging.LogRecord) -> bool:
        run = _get_current()
        if run is None or record.levelno < run.level:
            return False
        try:
            attrs = record.__dict__
            name = record.name
            verdict = _verdicts.get(name)
            if verdict is None:
                verdict = is_excluded(name)
            if verdict or MARK in attrs:
                return False
            if not self.last_stop:
                attrs[MARK] = True
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - arguments that do not fit the format
                message = f"{record.msg!s} {record.args!r}"
            if record.exc_info or record.exc_text or record.stack_info:
                data = _details(record)
            else:
                data = {"logger": name}
            run.emit(run.run_id, _LEVELS.get(record.levelno) or level_name(record.levelno),
                     message, data)
        except Exception:  # noqa: BLE001 - capturing never raises into the workflow
            _failed()
            return False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_STREAM_LEVELS = {"stdout": "info", "stderr": "error"}
_formatter = logging.Formatter()


class RunStream:
    """``sys.stdout`` / ``sys.stderr``: every write goes to the stream it wraps; inside a task,
    its complete lines also become lines of the run."""

    def __init__(self, inner: TextIO, name: str) -> None:
        self.inner = inner
        self.stream_name = name
        self.level = _STREAM_LEVELS[name]

    def write(self, text: str) -> int:
        run = _get_current()
        if run is not None and run.stdout and text:
            try:
                run.write(self.stream_name, self.level, str(text))
            except Exception:  # noqa: BLE001 - capturing never raises into the workflow
                _failed()
        return self.inner.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _details(record: logging.LogRecord) -> dict[str, Any]:
    """The data of a record with a traceback or a stack."""
    data: dict[str, Any] = {"logger": record.name}
    if record.exc_info:
        data["traceback"] = _formatter.formatException(record.exc_info)
    elif record.exc_text:
        data["traceback"] = record.exc_text
    if record.stack_info:
        data["stack"] = record.stack_info
    return data


def _failed() -> None:
    global failures
    failures += 1


_config: Config | None = None
_install_lock = threading.Lock()
#: The handler on the root logger (where every propagating record ends).
handler = CaptureHandler(last_stop=True)
#: The one on ``celery.task`` (``get_task_logger`` loggers' parent, which does not propagate
#: under a worker; should it, a record reaching both is captured here only).
task_handler = CaptureHandler()


def configure(capture: str = "logging,stdout", level: str | int = "INFO") -> Config:
    """Set what this process captures (otherwise read from the settings on the first task)."""
    global _config
    _config = Config.parse(capture, level)
    return _config


def _settings_config() -> Config:
    global _config
    from config import load_settings

    try:
        settings = load_settings()
        _config = Config.parse(settings.capture, settings.capture_level)
    except Exception as exc:  # noqa: BLE001 - never into the workflow: capture nothing
        logger.warning("relaycast capture: off (%s: %s)", type(exc).__name__, exc)
        _config = Config(logging=False, stdout=False)
    return _config


def install(config: Config) -> None:
    """Put the handler on the root logger (and ``celery.task``) and wrap the standard streams,
    as ``config`` asks; idempotent, and again after something replaced them (Celery's worker
    resets the root logger's handlers and the standard streams when it starts)."""
    task_logger = logging.getLogger("celery.task")
    root = logging.getLogger()
    wanted_handler = config.logging and (handler not in root.handlers or (
        not task_logger.propagate and task_handler not in task_logger.handlers))
    wanted_streams = config.stdout and not (isinstance(sys.stdout, RunStream)
                                            and isinstance(sys.stderr, RunStream))
    if not (wanted_handler or wanted_streams):
        return
    with _install_lock:
        if config.logging:
            if handler not in root.handlers:
                root.addHandler(handler)
            if not task_logger.propagate and task_handler not in task_logger.handlers:
                task_logger.addHandler(task_handler)
        if config.stdout:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if stream is not None and not isinstance(stream, RunStream):
                    setattr(sys, name, cast(TextIO, RunStream(stream, name)))


def begin(run_id: str, emitter: Emitter | None = None) -> contextvars.Token[Run | None] | None:
    """Capture into ``run_id`` in this context until :func:`end`; None when capture is off."""
    try:
        config = _config or _settings_config()
        if config.off:
            return None
        install(config)
        return current.set(Run(emitter or get_emitter(), run_id, config))
    except Exception:  # noqa: BLE001 - never into the workflow
        _failed()
        return None


def end(token: contextvars.Token[Run | None] | None) -> None:
    """Stop capturing (what :func:`begin` returned); a last partial printed line is stored."""
    if token is None:
        return
    run = current.get()
    try:
        if run is not None:
            run.finish()
    except Exception:  # noqa: BLE001 - never into the workflow
        _failed()
    finally:
        current.reset(token)
