"""The emitter: workflow code hands it lines; a flusher thread stores and enqueues them.

``emit`` appends a tuple to the buffer and returns: no I/O, no lock, no serialisation, and
no exception ever reaches the workflow. A flusher thread, every
``RELAYCAST_FLUSH_INTERVAL_MS`` or as soon as ``RELAYCAST_FLUSH_MAX_LINES`` lines wait,
runs one flush through three parts:

1. :class:`~workflows.buffer.LineBuffer` gives up to ``max_batch_lines`` lines in emit
   order (a burst is taken in slices, so storing one slice and broadcasting the previous
   overlap);
2. :class:`~workflows.writer.LineWriter` cleans them and stores them in SQL, where their
   sequence numbers are allocated (the source of truth);
3. :class:`~workflows.outbox.Outbox` enqueues ONE broadcast task carrying every line and
   admin event stored since the last send.

**Storing and sending have separate cadences.** A flush that only has to *store* (a
``LogStream`` leaving its ``with`` block, a workflow task's end: ``flush(wait_for_broker=
False)``, or an admin or app event waking the flusher) stores at once but enqueues only
when a send is due: at most once per flush interval, or at once when
``flush_max_lines`` lines wait, a whole batch (``max_batch_lines``) is staged, or someone
waits for the broker (``flush()``, :meth:`Emitter.stop` and so process exit). So many short
runs share broadcast tasks and provider requests, as a long run's lines do, and a caller
never waits for the broker unless it asks to.

If SQL is down, lines wait un-numbered (so shedding leaves no gap in the numbering) and are
retried with backoff; if the broker is down, stored batches wait and are enqueued in order
when it returns. Both waits are bounded (``RELAYCAST_BUFFER_MAX_LINES``), and every line
dropped is counted (a WARNING line in the run says how many were lost).

The per-process instance and its wiring live in :mod:`workflows.process`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broadcasters.wire import Channels
from workflows.buffer import Entry, LineBuffer
from workflows.cleaning import Cleaning
from workflows.outbox import Enqueue, Outbox
from workflows.writer import LineWriter, Stored

time_ns = time.time_ns

if TYPE_CHECKING:
    from config import Settings
    from workflows.store import LogStore

logger = logging.getLogger(__name__)


@dataclass
class EmitterStats:
    """Counters of one emitter (a snapshot: see :attr:`Emitter.stats`)."""

    emitted: int = 0
    stored: int = 0
    dropped: int = 0
    #: Stored in SQL but never handed to the broadcast queue (broker down past the bound).
    not_broadcast: int = 0
    #: Admin events given up with such a batch (they are not stored anywhere else).
    admin_dropped: int = 0
    #: Application events (``broadcast()``) given up likewise.
    app_dropped: int = 0
    #: Lines stored as a placeholder because the database refused them.
    bad_data: int = 0
    #: Values that could not be made text at all (kept as a marker).
    lost_values: int = 0
    #: Texts with NUL characters or lone surrogates replaced.
    cleaned_text: int = 0
    #: Lines with a level relaycast does not know (stored as ``info``).
    unknown_levels: int = 0
    #: Lines emitted after :meth:`Emitter.stop` (stored by the caller's thread).
    late: int = 0
    tasks_enqueued: int = 0
    enqueue_failures: int = 0
    store_failures: int = 0


class Emitter:
    """Per-process buffer and flusher. Use :func:`workflows.process.get_emitter`."""

    def __init__(
        self,
        *,
        store: Callable[[], LogStore],
        enqueue: Enqueue | None,
        channel_prefix: str = "private-",
        flush_interval_ms: int = 50,
        flush_max_lines: int = 1000,
        max_buffer_lines: int = 100_000,
        max_batch_lines: int = 2000,
        on_drops: Callable[[int], None] | None = None,
        app_event_max_bytes: int = 10_000,
    ) -> None:
        self.channels = Channels(channel_prefix)
        #: The largest application event's data (JSON, UTF-8 bytes) ``broadcast()`` accepts:
        #: what the Pusher broadcaster packs for (``RELAYCAST_PUSHER_MAX_EVENT_BYTES``).
        self.app_event_max_bytes = app_event_max_bytes
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.flush_max_lines = flush_max_lines
        self.max_batch_lines = max_batch_lines
        self.cleaning = Cleaning()
        self.buffer = LineBuffer(max_buffer_lines)
        self.writer = LineWriter(store, self.buffer.ledger, self.cleaning, on_drops)
        self.outbox = Outbox(enqueue, self.channels, max_batch_lines=max_batch_lines,
                             max_waiting_lines=max_buffer_lines, cleaning=self.cleaning)
        self._emitted = 0
        self._late = 0
        self._backlog: list[Entry] = []  # taken from the buffer, not yet stored (SQL down)
        self._new_thread_state()

    @classmethod
    def from_settings(cls, settings: Settings, *, enqueue: Enqueue | None,
                      on_drops: Callable[[int], None] | None = None) -> Emitter:
        """An emitter storing into ``DATABASE_URL`` (opened by the flusher on first use) with
        the ``RELAYCAST_FLUSH_*`` / ``RELAYCAST_BUFFER_MAX_LINES`` bounds."""
        from workflows.store import store_for

        url = settings.database_url_or_default
        return cls(store=lambda: store_for(url), enqueue=enqueue, on_drops=on_drops,
                   channel_prefix=settings.channel_prefix,
                   flush_interval_ms=settings.flush_interval_ms,
                   flush_max_lines=settings.flush_max_lines,
                   max_buffer_lines=settings.buffer_max_lines,
                   app_event_max_bytes=settings.pusher_max_event_bytes)

    def _new_thread_state(self) -> None:
        self._wake = threading.Event()
        self._woken = self._wake.is_set
        self._stopping = threading.Event()
        #: No flusher takes lines (not started yet, or stopped): emit must do something.
        self._idle = True
        self._done = threading.Condition()
        self._done_upto = 0  # every entry ordered up to here is stored and enqueued
        self._stored_upto = 0  # ... stored
        #: Callers of flush() waiting for the broker: the flusher sends at once (under _done).
        self._broker_waiters = 0
        #: When the flusher's next send is due (monotonic; set when its thread starts).
        self._next_send = 0.0
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def channel_prefix(self) -> str:
        return self.channels.prefix

    @property
    def stats(self) -> EmitterStats:
        return EmitterStats(
            emitted=self._emitted, stored=self.writer.stored, dropped=self.buffer.ledger.total,
            not_broadcast=self.outbox.not_broadcast, admin_dropped=self.outbox.admin_dropped,
            app_dropped=self.outbox.app_dropped,
            bad_data=self.writer.placeholders, lost_values=self.cleaning.lost,
            cleaned_text=self.cleaning.text, unknown_levels=self.cleaning.unknown_levels,
            late=self._late, tasks_enqueued=self.outbox.enqueued,
            enqueue_failures=self.outbox.failures, store_failures=self.writer.failures)

    # Hot path ----------------------------------------------------------------------------------

    def emit(self, run_id: str, level: Any, message: Any, data: Any) -> None:
        """Queue one line. Never blocks on I/O, never raises."""
        try:
            # Appended here, not through a LineBuffer method (the hot path: a call would
            # cost a tenth of an emit).
            buffer = self.buffer
            (buffer.debug if level == "debug" else buffer.other).append(
                (next(buffer.order), run_id, level, message, data, time_ns() // 1_000_000))
            waiting = len(buffer.debug) + len(buffer.other)
            if waiting > buffer.max_lines:
                buffer.over_bound(waiting)
            self._emitted += 1
            if waiting >= self.flush_max_lines and not self._woken():
                self._wake.set()
            if self._idle:
                self._after_first_line()
        except Exception:
            logger.exception("relaycast emitter: emit failed; line dropped")
            self.buffer.ledger.count(str(run_id))

    def emit_admin(self, event_type: str, data: Mapping[str, Any]) -> None:
        try:
            self.buffer.append_admin(event_type,
                                     {"type": event_type, "ts": time.time_ns() // 1_000_000, **data})
            if self._idle:
                self._after_first_line()
            self._wake.set()
        except Exception:
            logger.exception("relaycast emitter: admin event %s dropped", event_type)

    def emit_app(self, channel: str, event: str, payload: str) -> None:
        """Queue an application event (``channel`` and ``payload`` checked by the caller:
        :func:`workflows.app_events.broadcast`). Never blocks on I/O, never raises."""
        try:
            self.buffer.append_app(channel, event, payload)
            if self._idle:
                self._after_first_line()
            self._wake.set()
        except Exception:
            logger.exception("relaycast emitter: app event %s on %s dropped", event, channel)

    def _after_first_line(self) -> None:
        if self._stopping.is_set():
            # No flusher any more (the process is ending): store it from this thread, or it
            # would be lost without a trace.
            self._late += 1
            if self._late == 1:
                logger.warning("relaycast emitter: a line was emitted after the emitter stopped; "
                               "it is stored from the emitting thread")
            self.flush_once()
        else:
            self._start()

    # Flushing ----------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0, *, wait_for_broker: bool = True) -> bool:
        """Wait until every line emitted so far is stored in SQL and, with
        ``wait_for_broker`` (the default), handed to the broadcast queue (enqueued: not
        published by a worker yet); False when ``timeout_s`` ran out first.

        ``wait_for_broker=False`` waits for SQL only: the flusher stores the lines at once,
        and they go to the broadcast queue with its next due send (within the flush
        interval), sharing that task with whatever else is waiting. ``True`` makes the
        flusher send at once and waits for the enqueue (Redis) too.
        """
        target = self.buffer.next_order()
        if self._stopping.is_set():  # no flusher any more: flush (and send) here, in the caller
            self.flush_once()
            waiting = self._backlog or self.buffer.waiting()
            return not (waiting or (wait_for_broker and self.outbox.waiting_batches()))
        if self._thread is None:
            self._start()
        deadline = time.monotonic() + timeout_s
        with self._done:
            self._broker_waiters += wait_for_broker
            try:
                self._wake.set()
                while (self._done_upto if wait_for_broker else self._stored_upto) < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._done.wait(min(remaining, 0.05))
                    self._wake.set()
            finally:
                self._broker_waiters -= wait_for_broker
        return True

    def _start(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="relaycast-flusher", daemon=True)
            self._next_send = time.monotonic() + self.flush_interval_s
            self._thread.start()
            self._idle = self._stopping.is_set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.buffer.waiting() < self.flush_max_lines:
                self._wake.wait(max(0.0, self._next_send - time.monotonic()))
            self._wake.clear()
            try:
                send = self._send_due()
                # Nobody waits for this send: it may hold a few small runs back to fill
                # provider requests (workflows.outbox); a waiter's send holds nothing.
                self.flush_once(send=send, fill_requests=send and self._broker_waiters == 0)
            except Exception:
                logger.exception("relaycast emitter: flush failed")
        try:  # stopped: what a store-only flush staged meanwhile goes now, not never
            if self.outbox.waiting_batches():
                self.flush_once()
        except Exception:
            logger.exception("relaycast emitter: flush failed")

    def _send_due(self) -> bool:
        """Whether the flusher's next flush also enqueues (see the module docstring)."""
        return (self._broker_waiters > 0 or time.monotonic() >= self._next_send
                or self.buffer.waiting() >= self.flush_max_lines)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush and send (waiting for the broker up to ``timeout_s``), then stop the
        flusher; later lines are stored and sent by the emitting thread. Registered with
        ``atexit`` for the process's emitter, so process exit sends what is waiting."""
        self.flush(timeout_s)
        self._stopping.set()
        self._idle = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def flush_once(self, *, send: bool = True, fill_requests: bool = False) -> None:
        """One flush: drain, store (numbering), enqueue. Called by the flusher thread.

        ``send=False`` stores only: the lines wait in the outbox for the next flush that
        sends (unless a whole batch, ``max_batch_lines``, is staged already).
        ``fill_requests``: see :meth:`workflows.outbox.Outbox.send`."""
        with self._flush_lock:
            began = time.monotonic()
            upto = self.buffer.next_order()
            entries = self._backlog + self.buffer.drain(self.max_batch_lines)
            self._backlog = []
            admin = self.buffer.drain_admin()
            app = self.buffer.drain_app()
            first = min([e[0] for e in entries[:1]] + [a[0] for a in admin[:1]]
                        + [a[0] for a in app[:1]], default=upto)
            stored: Stored = []
            if (entries or self.buffer.ledger.unreported) and self.writer.ready():
                stored, entries = self.writer.write(entries)
            if entries:
                self._backlog = self.buffer.bound(entries)
            if admin:
                self.writer.record_lifecycle(admin)
            self.outbox.add(first, stored, admin, app)
            if send or self.outbox.staged_lines >= self.max_batch_lines:
                self.outbox.send(fill_requests=fill_requests)
                # The next send is due an interval after this flush ended, less what the
                # flush took beyond a fifth of an interval: a quick flush (a trickle of
                # lines) keeps the whole interval, so sends stay few; a long one (a large
                # flush, a slow database) does not stretch the time lines wait in the
                # buffer to the interval plus its own duration.
                ended = time.monotonic()
                self._next_send = ended + self.flush_interval_s - max(
                    0.0, ended - began - self.flush_interval_s / 5)
            stored_upto = self._backlog[0][0] - 1 if self._backlog else upto
            oldest = self.buffer.oldest_order()
            if oldest is not None:  # a slice of a burst: the rest waits for the next round
                stored_upto = min(stored_upto, oldest - 1)
            waiting = self.outbox.first_waiting_order()
            done_upto = min(stored_upto, waiting - 1) if waiting is not None else stored_upto
            with self._done:
                self._stored_upto = max(self._stored_upto, stored_upto)
                self._done_upto = max(self._done_upto, done_upto)
                self._done.notify_all()

    def after_fork_in_child(self) -> None:
        """A forked child owns neither the parent's flusher thread nor its buffered lines."""
        self.buffer.clear()
        self._backlog = []
        self.outbox.clear()
        self.writer.forget_store()
        self._new_thread_state()
