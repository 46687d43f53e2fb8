"""relaycast: stream Celery workflow logs and app events to browsers in real time.

The public surface for your code, and nothing else to import::

    from relaycast import LogStream, workflow, step, admin_event, broadcast

    @workflow("nightly")
    def nightly(log: LogStream, *, n: int = 3) -> None:
        log.info("starting", n=n)
        broadcast("orders", "shipped", {"order": 42})

Names load on first use (PEP 562), so ``import relaycast`` is cheap and never builds the
Celery app. With a broker configured (``CELERY_BROKER_URL`` or ``REDIS_URL``) the lines of
any process go live through the broadcast queue on their first flush, with no other import.
``celery -A relaycast worker`` finds the Celery app as ``relaycast.app``.

A user's module that stands where relaycast's own top-level packages are looked for (a
``config.py`` or ``tasks.py`` first on ``sys.path``) stops the first use with one line naming
it, exit status 2, instead of an import error deep inside (see :mod:`relaycast._layout`).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["LogStream", "admin_event", "app", "broadcast", "step", "workflow"]

if TYPE_CHECKING:
    from tasks.celery_app import app
    from workflows.admin_events import emit as admin_event
    from workflows.app_events import broadcast
    from workflows.base import step, workflow
    from workflows.log_stream import LogStream

#: Public name -> (module, attribute), loaded on first use.
_EXPORTS = {
    "LogStream": ("workflows.log_stream", "LogStream"),
    "workflow": ("workflows.base", "workflow"),
    "step": ("workflows.base", "step"),
    "admin_event": ("workflows.admin_events", "emit"),
    "broadcast": ("workflows.app_events", "broadcast"),
    "app": ("tasks.celery_app", "app"),
}


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'relaycast' has no attribute {name!r}")
    from relaycast._layout import Shadowed, ensure_ours

    try:
        ensure_ours()
    except Shadowed as exc:
        print(f"relaycast: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
