"""This process's emitter: built on first use, rebuilt clean after a fork.

The layer that wires the process hands over how to build it: the Celery app
(``tasks.celery_app``) does on import (:func:`configure` with an emitter whose ``enqueue``
publishes the broadcast task). A process that never imported it (a plain script using
``from relaycast import LogStream``) finds it itself on first use: with a broker configured
(``CELERY_BROKER_URL`` or ``REDIS_URL``), the factory registered under the entry point
``relaycast.emitter`` / ``celery`` (in ``pyproject.toml``) is loaded by name, so this layer
never imports the one above it. Without a broker, the emitter stores lines in SQL and says
that nothing broadcasts them live.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable

from config import Settings
from workflows.emitter import Emitter
from workflows.forks import on_fork

logger = logging.getLogger(__name__)

_all_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()
_emitter: Emitter | None = None
_emitter_lock = threading.Lock()
_factory: Callable[[], Emitter] | None = None


@on_fork
def _after_fork_in_child() -> None:
    global _emitter_lock
    _emitter_lock = threading.Lock()
    for emitter in list(_all_emitters):
        emitter.after_fork_in_child()


def configure(factory: Callable[[], Emitter] | None) -> None:
    """Set how this process builds its emitter (``None``: the store-only default)."""
    global _factory
    _factory = factory


def track(emitter: Emitter) -> Emitter:
    """Have ``emitter`` reset in a forked child (every emitter built here is tracked)."""
    _all_emitters.add(emitter)
    return emitter


def get_emitter() -> Emitter:
    """This process's emitter, built on first use."""
    global _emitter
    if _emitter is not None:
        return _emitter
    with _emitter_lock:
        if _emitter is None:
            _emitter = track((_factory or _registered_factory() or store_only_emitter)())
            atexit.register(_emitter.stop, 5.0)
        return _emitter


def reset_emitter() -> None:
    """Stop and forget this process's emitter (tests, and the demo between runs)."""
    global _emitter
    with _emitter_lock:
        if _emitter is not None:
            _emitter.stop(timeout_s=5.0)
            atexit.unregister(_emitter.stop)
        _emitter = None


#: The entry-point group and name of the factory that wires an emitter to a broker.
EMITTER_ENTRY_POINTS = "relaycast.emitter"
BROKER_WIRING = "celery"


def _registered_factory() -> Callable[[], Emitter] | None:
    """The broker's emitter factory, found by name (see the module docstring); None when no
    broker is configured or the factory cannot be loaded (logged: lines are still stored)."""
    from importlib.metadata import entry_points

    from config import load_settings

    settings = load_settings()
    if not settings.broker_url:
        return None
    for entry in entry_points(group=EMITTER_ENTRY_POINTS, name=BROKER_WIRING):
        try:
            factory: Callable[[Settings], Callable[[], Emitter]] = entry.load()
            return factory(settings)
        except BaseException as exc:  # noqa: BLE001 - never into the workflow, not even SystemExit
            logger.warning("relaycast emitter: could not wire the broker (%s: %s); lines are "
                           "stored, not broadcast live", type(exc).__name__, exc)
            return None
    logger.warning("relaycast emitter: no %r entry point %r (is relaycast installed? "
                   "`pip install -e .` in a checkout); lines are stored, not broadcast live",
                   EMITTER_ENTRY_POINTS, BROKER_WIRING)
    return None


def store_only_emitter() -> Emitter:
    """An emitter for the process's settings that stores lines but has no broadcast queue."""
    from config import load_settings

    return Emitter.from_settings(load_settings(), enqueue=None)
