"""One registry of what a forked child must start afresh.

A process that forks (Celery's prefork pool: billiard's ``os.fork()``; ``multiprocessing``
with the fork start method; a user's own ``os.fork()``) hands its child copies of every
object, threads excepted: the parent's sockets, connection pools, locks held by threads that
do not exist in the child, buffers of lines the parent still owns. Each module that keeps
such an object registers how to forget it with :func:`on_fork`; the registry runs every
callback in the child, in the order they were registered, right after the fork
(``os.register_at_fork``, registered once here), before any task runs. One failing callback
is logged and does not stop the others.

Registered today: the worker's runtime objects (``tasks.runtime``: settings, the manager and
its shared-state client, the ordering gate), the process's emitter (``workflows.process``),
the SQL stores (``workflows.store.log_store``) and the run heartbeat writer
(``workflows.heartbeat``). This module imports nothing of relaycast's, so any layer may use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

_callbacks: list[Callable[[], None]] = []


def on_fork(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback()`` in every child forked from now on; returns it (a decorator too)."""
    _callbacks.append(callback)
    return callback


def run_after_fork() -> None:
    """Every registered callback, in registration order (called in a child after a fork)."""
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:
            logger.exception("after fork: %r failed", callback)


os.register_at_fork(after_in_child=run_after_fork)
