"""This process's emitter: built on first use, rebuilt clean after a fork.

The layer that wires the process hands over how to build it: ``tasks`` does on import
(:func:`configure` with an emitter whose ``enqueue`` publishes the broadcast task), so
workflow tasks under ``celery -A tasks worker`` broadcast live. Code outside a worker
does the same by importing ``tasks`` once. Without a factory, the emitter stores lines
in SQL and says that nothing broadcasts them.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable

from workflows.emitter import Emitter

_all_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()
_emitter: Emitter | None = None
_emitter_lock = threading.Lock()
_factory: Callable[[], Emitter] | None = None


def _after_fork_in_child() -> None:
    global _emitter_lock
    _emitter_lock = threading.Lock()
    for emitter in list(_all_emitters):
        emitter.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
            _emitter = track((_factory or store_only_emitter)())
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


def store_only_emitter() -> Emitter:
    """An emitter for the process's settings that stores lines but has no broadcast queue."""
    from config import load_settings

    return Emitter.from_settings(load_settings(), enqueue=None)
