"""Per-process objects of a worker: settings, the broadcaster manager, the SQL store.

Built lazily on first use, so each prefork child creates its own clients after the fork
(sockets and ``requests`` sessions must not be shared across processes); rebuilt when a
new process is detected.
"""

from __future__ import annotations

import os
import threading

from broadcasters.manager import BroadcasterManager
from config import Settings, load_settings
from workflows.store import LogStore, store_for

_lock = threading.Lock()
_pid: int | None = None
_settings: Settings | None = None
_manager: BroadcasterManager | None = None


def _check_pid() -> None:
    global _pid, _settings, _manager
    if _pid != os.getpid():
        _pid, _settings, _manager = os.getpid(), None, None


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
            from broadcasters.factory import build_manager

            _manager = build_manager(current)
        return _manager


def store() -> LogStore:
    return store_for(settings().database_url_or_default)


def reset() -> None:
    """Forget everything (a new worker process, or a test that changes the environment)."""
    global _pid, _settings, _manager
    with _lock:
        if _manager is not None and _pid == os.getpid():
            _manager.close()
        _pid, _settings, _manager = None, None, None
