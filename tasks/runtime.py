"""Per-process objects of a worker: settings, the broadcaster manager, the shared state,
the ordering gate, the SQL store.

Built lazily on first use, so each prefork child creates its own clients after the fork
(sockets and ``requests`` sessions must not be shared across processes): a forked child
forgets its parent's (:mod:`workflows.forks`) and builds its own on first use.
"""

from __future__ import annotations

import threading

from broadcasters.factory import build_manager
from broadcasters.manager import BroadcasterManager
from broadcasters.occupancy import Occupancy
from broadcasters.ordering import RunGate
from broadcasters.state import SharedState
from config import Settings, load_settings
from workflows.forks import on_fork
from workflows.store import LogStore, store_for

_lock = threading.Lock()
_settings: Settings | None = None
_manager: BroadcasterManager | None = None
_gate: RunGate | None = None


@on_fork
def _forget_after_fork() -> None:
    """A forked child builds its own (never closing the parent's clients: they are its)."""
    global _lock, _settings, _manager, _gate
    _lock = threading.Lock()
    _settings, _manager, _gate = None, None, None


def settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def manager() -> BroadcasterManager:
    global _manager
    current = settings()
    with _lock:
        if _manager is None:
            _manager = build_manager(current)
        return _manager


def state() -> SharedState:
    """The manager's shared state (one client per process)."""
    return manager().state


def gate() -> RunGate:
    global _gate
    current = settings()
    shared = state()
    with _lock:
        if _gate is None:
            _gate = RunGate(shared, wait_s=current.order_wait_ms / 1000.0)
        return _gate


def occupancy() -> Occupancy | None:
    """Who watches which run, when occupancy gating is on (``RELAYCAST_OCCUPANCY``)."""
    current = settings()
    if current.occupancy == "off":
        return None  # without building the manager for it
    return Occupancy.for_settings(current, state())


def store() -> LogStore:
    return store_for(settings().database_url_or_default)


def reset() -> None:
    """Close and forget everything (a test that changes the environment)."""
    global _settings, _manager, _gate
    with _lock:
        if _manager is not None:
            _manager.close()
            _manager.state.close()
        _settings, _manager, _gate = None, None, None
