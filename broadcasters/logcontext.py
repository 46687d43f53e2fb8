"""What a log line is about, where the code knows it: the run and the broadcaster.

Two context variables, set around the work they describe and read by the JSON log formatter
(:mod:`tasks.logformat`, ``RELAYCAST_LOG_FORMAT=json``), which writes them as ``run_id`` and
``broadcaster`` in every line logged meanwhile, by any logger:

* :data:`current_run`: a workflow or step task's run while its body runs
  (``WorkflowTask.__call__``), a broadcast task's run when its batch carries one run only;
* :data:`current_broadcaster`: the broadcaster the manager is calling or flagging.

A context variable is per thread (and per asyncio task), so tasks running at once in one
process (``-P threads``) never see each other's. A record may also name them itself
(``logger.warning(..., extra={"broadcaster": name})``), which wins. Setting one costs a
context-variable write, whatever the log format.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["bound", "current_broadcaster", "current_run"]

current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "relaycast_log_run_id", default=None)
current_broadcaster: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "relaycast_log_broadcaster", default=None)


@contextmanager
def bound(*, run_id: str | None = None, broadcaster: str | None = None) -> Iterator[None]:
    """Lines logged inside are about ``run_id`` and/or ``broadcaster`` (None: unchanged)."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    if run_id is not None:
        tokens.append((current_run, current_run.set(run_id)))
    if broadcaster is not None:
        tokens.append((current_broadcaster, current_broadcaster.set(broadcaster)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)
