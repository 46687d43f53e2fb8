"""``LogStream``: what workflow code calls to log a run's lines live.

    with LogStream(run_id) as log:
        log.info("extracted rows", rows=1200)

Every call returns in microseconds and never raises (see :mod:`workflows.emitter`).
Lines go to ``{RELAYCAST_CHANNEL_PREFIX}logs-{run_id}`` and into SQL.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType
from typing import Any, Self

from workflows.emitter import Emitter, get_emitter

#: Characters Pusher allows in a channel name (and so in a run id).
RUN_ID_CHARS = "letters, digits and _ - = @ , . ;"
_RUN_ID = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
#: Pusher's channel-name limit, prefixes included.
MAX_CHANNEL_CHARS = 164
#: The width of the ``run_id`` columns in SQL.
MAX_RUN_ID_CHARS = 128


class InvalidRunId(ValueError):
    """A run id that cannot be part of a channel name."""


def validate_run_id(run_id: str, channel_prefix: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidRunId(
            f"run id {run_id!r} is not valid in a channel name: use only {RUN_ID_CHARS}")
    limit = min(MAX_RUN_ID_CHARS, MAX_CHANNEL_CHARS - len(channel_prefix) - len("logs-"))
    if len(run_id) > limit:
        raise InvalidRunId(f"run id is {len(run_id)} characters; at most {limit} are allowed "
                           f"(SQL holds {MAX_RUN_ID_CHARS}; a channel name with the prefix "
                           f"{channel_prefix!r} holds {MAX_CHANNEL_CHARS - len(channel_prefix) - 5})")
    return run_id


class LogStream:
    """The lines of one run. Cheap to create; thread-safe; usable as a context manager."""

    def __init__(self, run_id: str, *, emitter: Emitter | None = None) -> None:
        self._emitter = emitter or get_emitter()
        self.run_id = validate_run_id(run_id, self._emitter.channel_prefix)
        self.channel = f"{self._emitter.channel_prefix}logs-{run_id}"

    def debug(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "debug", message, data)

    def info(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "info", message, data)

    def warning(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "warning", message, data)

    def error(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "error", message, data)

    def log(self, level: str, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, level, message, data)

    def flush(self, timeout_s: float = 5.0, *, wait_for_broker: bool = True) -> bool:
        """Wait until every line so far is stored in SQL and (unless ``wait_for_broker`` is
        False) handed to the broadcast queue; False when ``timeout_s`` ran out first."""
        return self._emitter.flush(timeout_s, wait_for_broker=wait_for_broker)

    def close(self, timeout_s: float = 5.0) -> bool:
        return self.flush(timeout_s)

    def handler(self, level: int = logging.NOTSET) -> LogStreamHandler:
        return LogStreamHandler(self, level)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LogStream {self.run_id} on {self.channel}>"


class LogStreamHandler(logging.Handler):
    """A ``logging.Handler`` feeding a :class:`LogStream`: ``logger.addHandler(log.handler())``.

    The record's logger name goes into the line's data, with the formatted traceback when
    there is one; ``extra`` fields are not copied (they are arbitrary objects).
    """

    def __init__(self, stream: LogStream, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = ("error" if record.levelno >= logging.ERROR else
                     "warning" if record.levelno >= logging.WARNING else
                     "info" if record.levelno >= logging.INFO else "debug")
            data: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                data["traceback"] = logging.Formatter().formatException(record.exc_info)
            self.stream.log(level, record.getMessage(), **data)
        except Exception:  # noqa: BLE001 - logging must never break the workflow
            self.handleError(record)
