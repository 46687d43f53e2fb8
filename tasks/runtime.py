"""Per-process objects of a worker: settings, the broadcaster manager, the shared state,
the ordering gate, the SQL store.

Built lazily on first use, so each prefork child creates its own clients after the fork
(sockets and ``requests`` sessions must not be shared across processes); rebuilt when a
new process is detected.
"""

from __future__ import annotations

import os
import threading

from broadcasters.factory import build_manager
from broadcasters.manager import BroadcasterManager
from broadcasters.occupancy import Occupancy
from broadcasters.ordering import RunGate
from broadcasters.state import SharedState
from config import Settings, load_settings
from workflows.store import LogStore, store_for

_lock = threading.Lock()
_pid: int | None = None
_settings: Settings | None = None
_manager: BroadcasterManager | None = None
_gate: RunGate | None = None


def _check_pid() -> None:
    global _pid, _settings, _manager, _gate
    if _pid != os.getpid():
        _pid, _settings, _manager, _gate = os.getpid(), None, None, None


def settings() -> Settings:
    global _settings
    with _lock:
        _check_pid()
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
    """Forget everything (a new worker process, or a test that changes the environment)."""
    global _pid, _settings, _manager, _gate
    with _lock:
        if _manager is not None and _pid == os.getpid():
            _manager.close()
            _manager.state.close()
        _pid, _settings, _manager, _gate = None, None, None, None
