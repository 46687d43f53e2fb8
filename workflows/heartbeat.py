"""Heartbeats of running runs: the sign of life the ``relaycast.runs_lost`` beat task reads
(:mod:`tasks.lost`) to tell a run whose worker died from one that is merely quiet.

While a workflow or step task of run R executes, its process keeps the key
``{RELAYCAST_STATE_PREFIX}runs:alive:R`` in the shared Redis state set to the epoch seconds
of its latest heartbeat. The writer is one daemon thread per process, for every task that
process is running (prefork child, solo, or a threads pool: registration is counted per run
and guarded by a lock); it starts on the first registration after a fork, and refreshes every
:func:`beat_interval_s` (min(5, bound/4) s, bound = ``RELAYCAST_RUN_LOST_AFTER_S``). Logging
has nothing to do with it: a step that sleeps for an hour without a line keeps its run alive
as long as its process lives; a process SIGKILLed, OOM-killed or on a host that vanished
stops beating, and the run is marked ``lost`` one bound after its last heartbeat.

* :func:`enter` / :func:`leave` (``WorkflowTask.__call__``, in a ``try/finally``) only touch
  a dict under a lock and wake the thread: the task never waits on Redis and never sees its
  errors. ``leave`` has the thread write one last heartbeat for the run, so that between two
  steps of a canvas (the next one waiting in the queue, nothing of the run executing) the run
  is judged from when the previous step ended. A step that waits in the queue longer than the
  bound gets its run marked ``lost``; its real end still wins (``finished`` after ``lost``).
* Each key expires after four bounds (a missing key means "no heartbeat for longer than the
  bound"): the state heals by itself, as every key under the prefix does.
* Without ``REDIS_URL`` (the embedded demo) there is no shared state for another process to
  read: no heartbeat is written, and the beat task marks nothing lost.
* Redis unreachable: the heartbeat is skipped (logged at most every 30 s). An outage longer
  than the bound can get live runs marked ``lost``; their real end still wins.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from broadcasters import keys
from broadcasters.backends import StateBackend
from workflows.forks import on_fork

logger = logging.getLogger(__name__)

#: The longest and shortest pause between two heartbeats of a process.
MAX_BEAT_INTERVAL_S = 5.0
MIN_BEAT_INTERVAL_S = 0.25
_ERROR_LOG_EVERY_S = 30.0


def heartbeat_key(run_id: str) -> str:
    return keys.run_alive(run_id)


def beat_interval_s(lost_after_s: float) -> float:
    """How often a process refreshes its runs' heartbeats: min(5, bound/4) seconds."""
    return max(MIN_BEAT_INTERVAL_S, min(MAX_BEAT_INTERVAL_S, lost_after_s / 4))


def key_ttl_s(lost_after_s: float) -> float:
    """How long a heartbeat key lives: four bounds, so a missing key means a stale run."""
    return 4 * lost_after_s


#: Opens the shared state for heartbeats: the backend and the bound, or None (no Redis).
Connect = Callable[[], "tuple[StateBackend, float] | None"]


def connect_from_settings() -> tuple[StateBackend, float] | None:
    """The shared Redis state of this process's settings; None without ``REDIS_URL``."""
    from broadcasters.backends import RedisBackend
    from config import load_settings

    settings = load_settings()
    if not settings.redis_url:
        return None
    return (RedisBackend.from_url(settings.redis_url, settings.state_prefix),
            settings.run_lost_after_s)


class Heartbeat:
    """One process's heartbeat writer: runs registered by the tasks executing here, one
    daemon thread writing their heartbeats (started on first use, again after a fork)."""

    def __init__(self, connect: Connect = connect_from_settings,
                 clock: Callable[[], float] = time.time) -> None:
        self._connect = connect
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running: dict[str, int] = {}
        self._last_touch: set[str] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last_error_log = float("-inf")
        #: Heartbeat rounds written, and rounds that failed (this process).
        self.beats = 0
        self.errors = 0

    # Called by tasks (never blocks on I/O, never raises) -------------------------------------

    def enter(self, run_id: str) -> None:
        """A task of ``run_id`` begins executing in this process."""
        try:
            with self._lock:
                self._running[run_id] = self._running.get(run_id, 0) + 1
                self._ensure_thread()
            self._wake.set()
        except Exception:  # a heartbeat never breaks a workflow
            logger.exception("heartbeat: could not register run %s", run_id)

    def leave(self, run_id: str) -> None:
        """A task of ``run_id`` ended here: one last heartbeat once no other task runs it."""
        try:
            with self._lock:
                left = self._running.get(run_id, 0) - 1
                if left > 0:
                    self._running[run_id] = left
                    return
                self._running.pop(run_id, None)
                self._last_touch.add(run_id)
            self._wake.set()
        except Exception:
            logger.exception("heartbeat: could not unregister run %s", run_id)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    # The thread ------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        """Start the writer (under the lock). A forked child inherits registrations and a
        dead thread from its parent: it starts clean."""
        if self._pid != os.getpid():
            self._reset_after_fork()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="relaycast-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _reset_after_fork(self) -> None:
        self._running, self._last_touch = {}, set()
        self._thread, self._pid = None, os.getpid()
        self._wake = threading.Event()

    def _loop(self) -> None:
        try:
            connected = self._connect()
        except Exception:
            logger.exception("heartbeat: shared state unavailable; no heartbeats from this "
                             "process (its runs may be marked lost)")
            return
        if connected is None:
            logger.debug("heartbeat: no REDIS_URL, no heartbeats (runs are never marked lost)")
            return
        backend, lost_after_s = connected
        interval = beat_interval_s(lost_after_s)
        ttl = key_ttl_s(lost_after_s)
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            with self._lock:
                runs = set(self._running) | self._last_touch
                self._last_touch = set()
            if runs:
                self.write(backend, runs, ttl)

    def write(self, backend: StateBackend, runs: Iterable[str], ttl_s: float) -> None:
        """Set each run's heartbeat to now (errors counted and logged, never raised)."""
        now = repr(self._clock())
        try:
            for run_id in runs:
                backend.set(heartbeat_key(run_id), now, ttl_s)
            self.beats += 1
        except Exception as exc:  # noqa: BLE001 - StateUnavailable, or anything else
            self.errors += 1
            mono = time.monotonic()
            if mono - self._last_error_log > _ERROR_LOG_EVERY_S:
                self._last_error_log = mono
                logger.warning("heartbeat: not written (%s: %s); %d failure(s) so far",
                               type(exc).__name__, exc, self.errors)


def read_heartbeats(backend: StateBackend, run_ids: list[str]) -> dict[str, float]:
    """The latest heartbeat (epoch seconds) of each run that has one (one round trip; raises
    :class:`~broadcasters.backends.StateUnavailable`)."""
    values = backend.get_many([heartbeat_key(run_id) for run_id in run_ids])
    out: dict[str, float] = {}
    for run_id, value in zip(run_ids, values, strict=True):
        if value is not None:
            try:
                out[run_id] = float(value)
            except ValueError:
                continue
    return out


#: This process's writer; a forked child starts with a fresh one (new lock, no thread).
_process_heartbeat = Heartbeat()
on_fork(_process_heartbeat._reset)


def enter(run_id: str) -> None:
    _process_heartbeat.enter(run_id)


def leave(run_id: str) -> None:
    _process_heartbeat.leave(run_id)
