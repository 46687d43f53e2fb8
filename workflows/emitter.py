"""The emitter: workflow code hands it lines; a flusher thread stores and enqueues them.

``emit`` appends a tuple to an in-memory deque and returns: no I/O, no lock, no
serialisation, and no exception ever reaches the workflow. A flusher thread, every
``RELAYCAST_FLUSH_INTERVAL_MS`` or as soon as ``RELAYCAST_FLUSH_MAX_LINES`` lines wait:

1. assigns each run's next sequence numbers (contiguous; continuing from SQL the first
   time this process sees a run, so a retried workflow does not collide with itself);
2. bulk-inserts the lines into SQL (the source of truth);
3. enqueues ONE broadcast task carrying every line and admin event of the flush.

If SQL is down, lines wait un-numbered (so shedding leaves no gap in the numbering) and
are retried with backoff; if the broker is down, stored batches wait and are enqueued in
order when it returns. Both waits are bounded: past ``RELAYCAST_BUFFER_MAX_LINES`` the
oldest DEBUG lines are dropped first, then the oldest others, and every drop is counted
(a WARNING line in the run says how many were lost).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

LEVELS = ("debug", "info", "warning", "error")

#: (order, run_id, level, message, data, ts_ms)
Entry = tuple[int, str, str, Any, Any, int]
#: One broadcast task's argument: {"runs": [...], "admin": [...]}.
Batch = dict[str, Any]


@dataclass
class EmitterStats:
    emitted: int = 0
    stored: int = 0
    dropped: int = 0
    #: Stored in SQL but never handed to the broadcast queue (broker down past the bound).
    not_broadcast: int = 0
    #: Admin events given up with such a batch (they are not stored anywhere else).
    admin_dropped: int = 0
    bad_data: int = 0
    tasks_enqueued: int = 0
    enqueue_failures: int = 0
    store_failures: int = 0
    dropped_by_run: dict[str, int] = field(default_factory=dict)


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` with NaN/Infinity as strings (PostgreSQL's json refuses those tokens)."""
    if depth > 50:
        return repr(value)[:200]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return value


_SCALARS = (int, bool, type(None))


def clean_text(text: str) -> str:
    """``text`` without NUL characters, which PostgreSQL text columns cannot hold."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def clean_data(data: Any) -> tuple[dict[str, Any], bool]:
    """``data`` as plain JSON values that every supported database stores.

    Anything JSON cannot hold becomes its ``str``; NaN and Infinity become strings; NUL
    characters become U+FFFD. Returns ``(clean, ok)``: ``ok`` is False when the data could
    not be kept as given (``clean`` then holds its ``repr`` under ``"unserialisable"``).
    """
    if not data:
        return {}, True
    if type(data) is dict and all(
            type(k) is str and (type(v) in _SCALARS or (type(v) is str and "\x00" not in v)
                                or (type(v) is float and math.isfinite(v)))
            for k, v in data.items()):
        return data, True  # flat and plain: the common case, no JSON round trip
    try:
        try:
            text = json.dumps(data, default=str, ensure_ascii=False, allow_nan=False)
        except ValueError as exc:
            if "out of range float" not in str(exc).lower():
                raise
            text = json.dumps(_plain(data), default=str, ensure_ascii=False, allow_nan=False)
        value = json.loads(text.replace("\\u0000", "\\ufffd"))
        if not isinstance(value, dict):
            value = {"value": value}
        return value, True
    except Exception as exc:  # noqa: BLE001 - whatever a __str__ raises, the line is kept
        try:
            shown = repr(data)[:2000]
        except Exception:  # noqa: BLE001 - a broken __repr__ must not stop the flush
            shown = f"<unrepresentable {type(data).__name__}>"
        return {"unserialisable": clean_text(shown),
                "error": f"{type(exc).__name__}: {exc}"[:200]}, False


class Emitter:
    """Per-process buffer and flusher. Use :func:`get_emitter` rather than building one."""

    def __init__(
        self,
        *,
        store: Callable[[], Any],
        enqueue: Callable[[Batch], None],
        channel_prefix: str = "private-",
        flush_interval_ms: int = 50,
        flush_max_lines: int = 1000,
        max_buffer_lines: int = 100_000,
        max_batch_lines: int = 2000,
        on_drops: Callable[[int], None] | None = None,
    ) -> None:
        self._store_factory = store
        self._store: Any = None
        self._enqueue = enqueue
        self.channel_prefix = channel_prefix
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.flush_max_lines = flush_max_lines
        self.max_buffer_lines = max_buffer_lines
        self.max_batch_lines = max_batch_lines
        self.stats = EmitterStats()
        #: Told how many lines were dropped, once they are accounted for in SQL (health).
        self._on_drops = on_drops

        self._order = itertools.count(1)
        self._debug: deque[Entry] = deque()
        self._other: deque[Entry] = deque()
        self._admin: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._backlog: list[Entry] = []  # drained, not yet stored (SQL down)
        self._unsent: deque[tuple[int, Batch, int]] = deque()  # stored, not enqueued
        self._next_seq: dict[str, int] = {}
        self._pending_drops: dict[str, int] = {}

        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._done_upto = 0  # every entry ordered up to here is stored and enqueued
        self._stored_upto = 0  # ... stored
        self._flush_lock = threading.Lock()
        self._retry_store_at = 0.0
        self._store_failures_in_row = 0
        self._retry_enqueue_at = 0.0
        self._enqueue_failures_in_row = 0
        self._thread: threading.Thread | None = None
        _all_emitters.add(self)

    # Hot path ----------------------------------------------------------------------------------

    def emit(self, run_id: str, level: str, message: Any, data: Any) -> None:
        """Queue one line. Never blocks on I/O, never raises."""
        try:
            entry = (next(self._order), run_id, level, message, data, time.time_ns() // 1_000_000)
            (self._debug if level == "debug" else self._other).append(entry)
            self.stats.emitted += 1
            waiting = len(self._debug) + len(self._other)
            if waiting > self.max_buffer_lines:
                self._shed(self._debug, self._other, waiting - self.max_buffer_lines)
            if waiting >= self.flush_max_lines and not self._wake.is_set():
                self._wake.set()
            if self._thread is None:
                self._start()
        except Exception:
            logger.exception("relaycast emitter: emit failed; line dropped")
            self.stats.dropped += 1

    def emit_admin(self, event_type: str, data: Mapping[str, Any]) -> None:
        try:
            payload = {"type": event_type, "ts": time.time_ns() // 1_000_000, **data}
            self._admin.append((next(self._order), event_type, payload))
            if self._thread is None:
                self._start()
            self._wake.set()
        except Exception:
            logger.exception("relaycast emitter: admin event %s dropped", event_type)

    def _shed(self, debug: deque[Entry], other: deque[Entry], count: int) -> None:
        """Drop ``count`` lines: the oldest DEBUG first, then the oldest of the rest."""
        for _ in range(count):
            source = debug if debug else other
            try:
                entry = source.popleft()
            except IndexError:
                return
            self._count_drop(entry[1])

    def _count_drop(self, run_id: str) -> None:
        self.stats.dropped += 1
        self.stats.dropped_by_run[run_id] = self.stats.dropped_by_run.get(run_id, 0) + 1
        self._pending_drops[run_id] = self._pending_drops.get(run_id, 0) + 1

    # Flushing ----------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0, *, wait_for_broker: bool = True) -> bool:
        """Wait until every line emitted so far is stored in SQL and (unless
        ``wait_for_broker`` is False) handed to the broadcast queue; False on timeout."""
        target = next(self._order)
        if self._stopping.is_set():  # no flusher any more: flush here, in the caller
            self.flush_once()
            waiting = self._backlog or self._debug or self._other
            return not (waiting or (wait_for_broker and self._unsent))
        if self._thread is None:
            self._start()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        with self._done:
            while (self._done_upto if wait_for_broker else self._stored_upto) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def _start(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="relaycast-flusher", daemon=True)
            self._thread.start()

    def _after_fork_in_child(self) -> None:
        """A forked child owns neither the parent's flusher thread nor its buffered lines."""
        self._debug.clear()
        self._other.clear()
        self._admin.clear()
        self._backlog = []
        self._unsent.clear()
        self._pending_drops = {}
        self._store = None
        self._next_seq = {}  # another process may have written these runs since the fork
        self._thread = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._flush_lock = threading.Lock()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if len(self._debug) + len(self._other) < self.flush_max_lines:
                self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush_once()
            except Exception:
                logger.exception("relaycast emitter: flush failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def flush_once(self) -> None:
        """One flush: drain, number, store, enqueue. Called by the flusher thread."""
        with self._flush_lock:
            upto = next(self._order)
            entries = self._drain()
            admin = self._drain_admin()
            first = min([e[0] for e in entries[:1]] + [a[0] for a in admin[:1]], default=upto)
            stored: list[tuple[str, list[dict[str, Any]]]] = []
            if entries and time.monotonic() >= self._retry_store_at:
                try:
                    stored = self._store_lines(entries)
                except Exception as exc:  # noqa: BLE001 - keep the lines whatever happened
                    self._store_failed(exc, len(entries))
                if stored:
                    entries = []
            if entries:
                self._backlog = entries
                self._bound_backlog()
            if admin:
                self._record_runs(admin)
            for batch, lines in self._batches(stored, admin):
                self._unsent.append((first, batch, lines))
            if self._unsent and time.monotonic() >= self._retry_enqueue_at:
                self._send_unsent()
            self._bound_unsent()
            stored_upto = self._backlog[0][0] - 1 if self._backlog else upto
            oldest = self._oldest_waiting()
            if oldest is not None:  # a slice of a burst: the rest waits for the next round
                stored_upto = min(stored_upto, oldest - 1)
            done_upto = min(stored_upto, self._unsent[0][0] - 1) if self._unsent else stored_upto
            with self._done:
                self._stored_upto = max(self._stored_upto, stored_upto)
                self._done_upto = max(self._done_upto, done_upto)
                self._done.notify_all()

    def _drain(self) -> list[Entry]:
        """The backlog, then at most ``max_batch_lines`` fresh lines in emit order. A burst is
        taken in slices so that storing one slice and broadcasting the previous overlap."""
        debug, other = self._debug, self._other
        fresh: list[Entry] = []
        while len(fresh) < self.max_batch_lines:
            if debug and (not other or debug[0][0] < other[0][0]):
                fresh.append(debug.popleft())
            elif other:
                fresh.append(other.popleft())
            else:
                break
        if self._backlog:
            fresh = self._backlog + fresh
            self._backlog = []
        return fresh

    def _oldest_waiting(self) -> int | None:
        heads = [q[0][0] for q in (self._debug, self._other) if q]
        return min(heads) if heads else None

    def _drain_admin(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [self._admin.popleft() for _ in range(len(self._admin))]

    def _bound_backlog(self) -> None:
        over = len(self._backlog) - self.max_buffer_lines
        if over <= 0:
            return
        debug = deque(e for e in self._backlog if e[2] == "debug")
        other = deque(e for e in self._backlog if e[2] != "debug")
        self._shed(debug, other, over)
        self._backlog = list(heapq.merge(debug, other))

    def _bound_unsent(self) -> None:
        """Stored-but-not-enqueued batches are bounded too; a dropped batch's lines stay in
        SQL (``relaycast logs`` and the history endpoint show them) but are not broadcast."""
        waiting = sum(n for _, _, n in self._unsent)
        while len(self._unsent) > 1 and waiting > self.max_buffer_lines:
            _, batch, lines = self._unsent.popleft()
            waiting -= lines
            self.stats.not_broadcast += lines
            self.stats.admin_dropped += len(batch["admin"])
            logger.warning("relaycast emitter: broker unreachable; %d stored line(s) will not be "
                           "broadcast live (they are in the history)", lines)

    def _store_lines(self, entries: list[Entry]) -> list[tuple[str, list[dict[str, Any]]]]:
        """Number and insert ``entries``; return them grouped per run, or [] when SQL failed."""
        try:
            store = self._get_store()
            runs = {e[1] for e in entries} | set(self._pending_drops)
            unknown = [r for r in runs if r not in self._next_seq]
            if unknown:
                known = store.max_seqs(unknown)
                for run_id in unknown:
                    self._next_seq[run_id] = known.get(run_id, 0) + 1
        except Exception as exc:  # noqa: BLE001 - SQL down: keep the lines, try again later
            self._store_failed(exc, len(entries))
            return []
        per_run: dict[str, list[dict[str, Any]]] = {}
        seqs = dict(self._next_seq)
        drops, self._pending_drops = self._pending_drops, {}
        for run_id, count in drops.items():
            per_run.setdefault(run_id, []).append(self._row(
                run_id, seqs, "warning",
                f"relaycast: {count} line(s) of this run were dropped (emitter buffer full)",
                {"dropped": count}, time.time_ns() // 1_000_000))
        for _, run_id, level, message, data, ts in entries:
            per_run.setdefault(run_id, []).append(self._row(run_id, seqs, level, message, data, ts))
        rows = [row for lines in per_run.values() for row in lines]
        try:
            self._insert(rows)
        except Exception as exc:  # noqa: BLE001
            for run_id, count in drops.items():
                self._pending_drops[run_id] = self._pending_drops.get(run_id, 0) + count
            self._store_failed(exc, len(entries))
            return []
        self._next_seq = seqs
        if drops and self._on_drops is not None:
            try:
                self._on_drops(sum(drops.values()))
            except Exception:
                logger.warning("relaycast emitter: could not report dropped lines", exc_info=True)
        self._store_failures_in_row = 0
        self._retry_store_at = 0.0
        self.stats.stored += len(rows)
        return [(run_id, [{k: row[k] for k in ("seq", "ts", "level", "message", "data")}
                          for row in lines]) for run_id, lines in per_run.items()]

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows``; when the database refuses the data (not the connection), find the
        refused rows one by one and store a placeholder for each, so that one unstorable line
        cannot block every line behind it."""
        from sqlalchemy.exc import DBAPIError, StatementError

        try:
            self._store.insert_lines(rows)
            return
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_connection_error(exc):
                raise
            first_error: Exception = exc
        except (StatementError, UnicodeError) as exc:
            first_error = exc
        logger.warning("relaycast emitter: the database refused a batch (%s); storing line by "
                       "line", type(first_error).__name__)
        for index, row in enumerate(rows):
            for attempt in (row, None):
                candidate = attempt if attempt is not None else rows[index]
                try:
                    self._store.insert_lines([candidate])
                    break
                except DBAPIError as exc:
                    if exc.connection_invalidated or _is_connection_error(exc):
                        raise
                    error: Exception = exc
                except (StatementError, UnicodeError) as exc:
                    error = exc
                if attempt is not None:
                    rows[index] = self._placeholder(row, error)
                else:  # even the placeholder is refused (e.g. a run id too long for SQL)
                    self._count_drop(row["run_id"])
                    self._pending_drops.pop(row["run_id"], None)
                    logger.error("relaycast emitter: run %r seq %d cannot be stored at all (%s); "
                                 "dropped", str(row["run_id"])[:40], row["seq"],
                                 type(error).__name__)

    def _placeholder(self, row: dict[str, Any], exc: Exception) -> dict[str, Any]:
        self.stats.bad_data += 1
        logger.warning("relaycast emitter: run %s seq %d refused by the database (%s); stored "
                       "as text", row["run_id"], row["seq"], type(exc).__name__)
        return {**row, "message": clean_text(ascii(row["message"]))[:10_000],
                "data": {"unstorable": True, "error": f"{type(exc).__name__}"}}

    def _row(self, run_id: str, seqs: dict[str, int], level: str, message: Any, data: Any,
             ts: int) -> dict[str, Any]:
        seq = seqs[run_id]
        seqs[run_id] = seq + 1
        level = level.lower() if isinstance(level, str) else "info"
        clean, ok = clean_data(data)
        if not ok:
            self.stats.bad_data += 1
            logger.warning("relaycast emitter: run %s seq %d: data kept as text (%s)", run_id, seq,
                           clean.get("error"))
        if not isinstance(message, str):
            try:
                message = str(message)
            except Exception:  # noqa: BLE001
                message = f"<unprintable {type(message).__name__}>"
                self.stats.bad_data += 1
        return {"run_id": run_id, "seq": seq, "ts": ts,
                "level": level if level in LEVELS else "info", "message": clean_text(message),
                "data": clean}

    def _store_failed(self, exc: Exception, waiting: int) -> None:
        self.stats.store_failures += 1
        self._store_failures_in_row += 1
        delay = min(5.0, 0.1 * 2 ** min(self._store_failures_in_row, 6))
        self._retry_store_at = time.monotonic() + delay
        if self._store_failures_in_row in (1, 10) or self._store_failures_in_row % 100 == 0:
            logger.warning("relaycast emitter: SQL unavailable (%s: %s); %d line(s) waiting",
                           type(exc).__name__, exc, waiting)

    def _get_store(self) -> Any:
        """The store, built on first use (in the flusher thread, never on the emit path)."""
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _record_runs(self, admin: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Keep the ``runs`` table in step with the lifecycle events (best effort)."""
        for _, event_type, payload in admin:
            run_id = payload.get("run_id")
            if event_type not in ("started", "finished", "failed") or not isinstance(run_id, str):
                continue
            try:
                store = self._get_store()
                if event_type == "started":
                    store.start_run(run_id, str(payload.get("workflow", "")),
                                          clean_data(payload.get("params") or {})[0],
                                          at_ms=payload["ts"])
                else:
                    store.finish_run(
                        run_id, "succeeded" if event_type == "finished" else "failed",
                        payload.get("error"), at_ms=payload["ts"])
            except Exception as exc:  # noqa: BLE001 - bookkeeping only
                logger.warning("relaycast emitter: could not record run %s %s: %s", run_id,
                               event_type, exc)

    def _batches(self, stored: list[tuple[str, list[dict[str, Any]]]],
                 admin: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[Batch, int]]:
        """Usually one task's worth; a backlog after an outage is cut into tasks of at most
        ``max_batch_lines`` lines so no single task message grows without bound."""
        batches: list[tuple[Batch, int]] = []
        runs: list[dict[str, Any]] = []
        lines = 0
        for run_id, events in stored:
            for start in range(0, len(events), self.max_batch_lines):
                chunk = events[start:start + self.max_batch_lines]
                if runs and lines + len(chunk) > self.max_batch_lines:
                    batches.append(({"runs": runs, "admin": []}, lines))
                    runs, lines = [], 0
                runs.append({"run_id": run_id, "channel": f"{self.channel_prefix}logs-{run_id}",
                             "events": chunk})
                lines += len(chunk)
        admin_messages = [{"channel": f"{self.channel_prefix}admin-events", "event": event_type,
                           "data": clean_data(payload)[0], "id": f"admin:{uuid.uuid4().hex}"}
                          for _, event_type, payload in admin]
        if runs or admin_messages:
            batches.append(({"runs": runs, "admin": admin_messages}, lines))
        return batches

    def _send_unsent(self) -> None:
        while self._unsent:
            _, batch, _ = self._unsent[0]
            try:
                self._enqueue(batch)
            except Exception as exc:  # noqa: BLE001 - broker down: keep the batch, retry later
                self.stats.enqueue_failures += 1
                self._enqueue_failures_in_row += 1
                delay = min(5.0, 0.1 * 2 ** min(self._enqueue_failures_in_row, 6))
                self._retry_enqueue_at = time.monotonic() + delay
                if self._enqueue_failures_in_row in (1, 10) or self._enqueue_failures_in_row % 100 == 0:
                    logger.warning("relaycast emitter: broker unavailable (%s: %s); %d batch(es) "
                                   "waiting", type(exc).__name__, exc, len(self._unsent))
                return
            self._unsent.popleft()
            self.stats.tasks_enqueued += 1
            self._enqueue_failures_in_row = 0


def _is_connection_error(exc: Exception) -> bool:
    """DBAPI errors that mean "the database is unreachable or busy", not "it refused this
    data" (DataError, IntegrityError, ProgrammingError)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, InterfaceError | OperationalError)


_all_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()
_emitter: Emitter | None = None
_emitter_lock = threading.Lock()
_factory: Callable[[], Emitter] | None = None


def _after_fork_in_child() -> None:
    global _emitter_lock
    _emitter_lock = threading.Lock()
    for emitter in list(_all_emitters):
        emitter._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(factory: Callable[[], Emitter]) -> None:
    """Set how this process builds its emitter (the Celery app does this on import)."""
    global _factory
    _factory = factory


def get_emitter() -> Emitter:
    """This process's emitter, built on first use."""
    global _emitter
    if _emitter is not None:
        return _emitter
    with _emitter_lock:
        if _emitter is None:
            _emitter = (_factory or default_emitter)()
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


def default_emitter() -> Emitter:
    """The emitter for the process's settings: SQL from ``DATABASE_URL``, tasks to Celery."""
    from config import load_settings
    from workflows.store import store_for

    settings = load_settings()
    url = settings.database_url_or_default

    def enqueue(batch: Batch) -> None:
        from tasks.broadcast import enqueue_batch

        enqueue_batch(batch)

    shared: list[Any] = []

    def report_drops(count: int) -> None:
        from broadcasters.factory import build_state

        if not shared:
            shared.append(build_state(settings))
        shared[0].count_pipeline(lines_dropped=count)

    return Emitter(store=lambda: store_for(url), enqueue=enqueue, on_drops=report_drops,
                   channel_prefix=settings.channel_prefix,
                   flush_interval_ms=settings.flush_interval_ms,
                   flush_max_lines=settings.flush_max_lines,
                   max_buffer_lines=settings.buffer_max_lines)

