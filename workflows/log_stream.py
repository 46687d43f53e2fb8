"""``LogStream``: what workflow code calls to log a run's lines live.

    with LogStream(run_id) as log:
        log.info("extracted rows", rows=1200)

Every call returns in microseconds and never raises (see :mod:`workflows.emitter`).
Lines go to ``{RELAYCAST_CHANNEL_PREFIX}logs-{run_id}`` and into SQL.

Leaving the ``with`` block (or :meth:`LogStream.close`) returns once the run's lines are in
SQL; it does not wait for the broker. Their broadcast goes with the flusher's next send
(within ``RELAYCAST_FLUSH_INTERVAL_MS``), in the same broadcast task as every other line
waiting, so many short runs cost a few tasks and provider requests, not one each. The
process's exit still sends whatever waits (the emitter's ``stop``, registered with
``atexit``). :meth:`LogStream.flush` waits for the broker too, unless told not to.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from broadcasters.wire import RUN_ID_CHARS, Channels, InvalidRunId
from workflows.cleaning import numeric_level
from workflows.emitter import Emitter
from workflows.process import get_emitter

__all__ = ["RUN_ID_CHARS", "InvalidRunId", "LogStream", "LogStreamHandler", "validate_run_id"]


def validate_run_id(run_id: object, channel_prefix: str) -> str:
    """``run_id`` if it can name a channel under ``channel_prefix``; :class:`InvalidRunId`
    saying which characters are allowed otherwise."""
    return Channels(channel_prefix).validate_run_id(run_id)


class LogStream:
    """The lines of one run. Cheap to create; thread-safe; usable as a context manager."""

    def __init__(self, run_id: str, *, emitter: Emitter | None = None) -> None:
        self._emitter = emitter or get_emitter()
        self.run_id = self._emitter.channels.validate_run_id(run_id)
        self.channel = self._emitter.channels.logs(run_id)

    def debug(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "debug", message, data)

    def info(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "info", message, data)

    def warning(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "warning", message, data)

    def error(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "error", message, data)

    def critical(self, message: str, **data: Any) -> None:
        self._emitter.emit(self.run_id, "critical", message, data)

    def log(self, level: str | int, message: str, **data: Any) -> None:
        """A line at ``level``: a name (``warn``, ``FATAL``: standard aliases map) or a
        ``logging`` number; an unknown one is stored as ``info``, the name kept in the data."""
        self._emitter.emit(self.run_id, level, message, data)

    def flush(self, timeout_s: float = 5.0, *, wait_for_broker: bool = True) -> bool:
        """Wait until every line emitted so far (this process's, every run's) is stored in
        SQL and, with ``wait_for_broker`` (the default), enqueued on the broadcast queue
        (Redis; not yet published by a worker); False when ``timeout_s`` ran out first.

        With ``wait_for_broker=False`` it waits for SQL only, as :meth:`close` does; the
        broadcast follows with the flusher's next send."""
        return self._emitter.flush(timeout_s, wait_for_broker=wait_for_broker)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Wait until every line emitted so far is stored in SQL (what leaving the ``with``
        block does), not for the broker: the lines are enqueued with the flusher's next
        send, sharing its broadcast task. False when ``timeout_s`` ran out first."""
        return self.flush(timeout_s, wait_for_broker=False)

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
            level = numeric_level(record.levelno)
            data: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                data["traceback"] = logging.Formatter().formatException(record.exc_info)
            self.stream.log(level, record.getMessage(), **data)
        except Exception:  # noqa: BLE001 - logging must never break the workflow
            self.handleError(record)
