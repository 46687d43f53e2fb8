"""The emitter's outbox: stored lines on their way to the broadcast queue.

:meth:`Outbox.add` stages a flush's stored lines, admin and app events; :meth:`Outbox.send`
cuts everything staged since the last send into batches and enqueues them. A send usually
makes ONE broadcast task carrying every line and event staged since the last one, so the
flushes that only store (a ``LogStream`` leaving its ``with`` block, a task's end: see
:meth:`workflows.emitter.Emitter.flush`) share the next periodic flush's task instead of
forcing one each: 500 short runs go out in a few tasks, not 500. Staged lines of one run
that continue each other (seq after seq) travel as one piece. A backlog after an outage is
cut into tasks of at most ``max_batch_lines`` lines, so no single task message grows without
bound.

The flusher's periodic sends also *fill requests*: a provider request carries at most
``fill_events`` events (Pusher's ``trigger_batch``: 10), and a short run's lines make one
event. When a periodic send has more than that many such small runs staged and nothing
else, the newest ``n mod fill_events`` of them wait one more interval (never two), so the
send's events fill whole requests: 500 runs of 10 lines go out in 50 requests, not one
partly empty request per send. A send someone waits for (``flush()``, the process's end)
holds nothing back. Batches are enqueued in order; while
the broker is down they wait (the lines are already in SQL), retried with backoff, and
are bounded: past ``max_waiting_lines`` the oldest batch is given up — its lines stay in
SQL (``relaycast logs``, the history endpoint, and the sweeper still have them) — and
counted.

Application events (``relaycast.broadcast``) ride in the same batches. Each gets the next
number of its *stream* — this outbox's events on that channel (a random id, new in a forked
child, plus the channel) — so the broadcast task's ordering gate publishes a channel's events
in the order this process emitted them, as it does a run's lines. They are in no database: a
batch given up while the broker is down takes them with it, counted in ``app_dropped``.

The outbox is handed its ``enqueue`` by whoever wires the process (``tasks`` does, on
import); it never imports Celery itself. Without one, lines are stored but not broadcast,
and it says so once.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable

from broadcasters.backoff import FailureStreak
from broadcasters.packing import REQUEST_EVENTS, SMALL_PIECE_LINES
from broadcasters.wire import (
    AdminMessage,
    AppMessage,
    Batch,
    Channels,
    LineEvent,
    RunLines,
    app_message_id,
    batch_lines,
    new_batch,
    pack_runs,
    place_run_starts,
)
from workflows.buffer import AdminEntry, AppEntry
from workflows.cleaning import Cleaning, clean_data
from workflows.writer import Stored

logger = logging.getLogger("workflows.emitter")

Enqueue = Callable[[Batch], None]


class Outbox:
    def __init__(self, enqueue: Enqueue | None, channels: Channels, *, max_batch_lines: int,
                 max_waiting_lines: int, cleaning: Cleaning | None = None,
                 fill_events: int = REQUEST_EVENTS) -> None:
        self._enqueue = enqueue
        self.fill_events = fill_events
        self.channels = channels
        self.max_batch_lines = max_batch_lines
        self.max_waiting_lines = max_waiting_lines
        self._cleaning = cleaning if cleaning is not None else Cleaning()
        #: (order of the first line or event it carries, batch, lines and app events)
        self._waiting: deque[tuple[int, Batch, int]] = deque()
        self._clear_staged()
        self._streak = FailureStreak()
        self._warned_unwired = False
        self._warned_app_unwired = False
        self.enqueued = 0
        self.failures = 0
        #: Stored in SQL but never handed to the broadcast queue (broker down past the bound).
        self.not_broadcast = 0
        #: Admin events given up with such a batch (they are not stored anywhere else).
        self.admin_dropped = 0
        #: Application events given up with such a batch (likewise).
        self.app_dropped = 0
        #: Runs whose ``started`` was sent and whose line 1 not yet (``Batch.after_start``).
        self._pending_starts: dict[str, None] = {}
        self._new_streams()

    def _clear_staged(self) -> None:
        #: Added since the last send, not yet cut into batches: per run, pieces of lines
        #: with consecutive seqs; admin and app events; the order of the first thing staged.
        self._staged: list[tuple[str, list[LineEvent]]] = []
        self._staged_last: dict[str, int] = {}  # run id -> index of its last piece
        self._staged_admin: list[AdminMessage] = []
        self._staged_app: list[AppMessage] = []
        self._staged_first: int | None = None
        self.staged_lines = 0
        #: Runs whose piece a periodic send held back to fill requests (see the module
        #: docstring): the next send takes them whatever happens.
        self._held: set[str] = set()

    def _new_streams(self) -> None:
        self._stream_base = uuid.uuid4().hex[:16]
        self._app_seqs: dict[str, int] = {}

    def _app_message(self, channel: str, event: str, payload: str) -> AppMessage:
        seq = self._app_seqs.get(channel, 0) + 1
        self._app_seqs[channel] = seq
        stream = f"{self._stream_base}/{channel}"
        return {"channel": channel, "event": event, "payload": payload,
                "id": app_message_id(stream, seq), "stream": stream, "seq": seq}

    def first_waiting_order(self) -> int | None:
        """The emit order of the oldest line or event not yet handed to the broadcast queue
        (in a batch waiting for the broker, or staged); None when everything was handed over."""
        return self._waiting[0][0] if self._waiting else self._staged_first

    def waiting_batches(self) -> int:
        """Batches not yet handed to the broadcast queue (what is staged counts as one)."""
        return len(self._waiting) + (self._staged_first is not None)

    def add(self, first_order: int, stored: Stored, admin: list[AdminEntry],
            app: list[AppEntry] | None = None) -> None:
        """Stage ``stored`` lines, ``admin`` events and ``app`` events for the next
        :meth:`send` (nothing is enqueued here). ``first_order``: the emit order of the
        oldest of them."""
        for run_id, events in stored:
            if not events:
                continue
            index = self._staged_last.get(run_id)
            if index is not None:
                piece = self._staged[index][1]
                if events[0]["seq"] == piece[-1]["seq"] + 1:
                    piece.extend(events)
                    self.staged_lines += len(events)
                    continue
            self._staged_last[run_id] = len(self._staged)
            self._staged.append((run_id, list(events)))
            self.staged_lines += len(events)
        self._staged_admin.extend(
            {"channel": self.channels.admin_events, "event": event_type,
             "data": clean_data(payload, self._cleaning), "id": f"admin:{uuid.uuid4().hex}"}
            for _, event_type, payload in admin)
        self._staged_app.extend(self._app_message(channel, event, payload)
                                for _, channel, event, payload in app or [])
        if self._staged_first is None and (self._staged or self._staged_admin
                                           or self._staged_app):
            self._staged_first = first_order

    def _hold_back(self) -> list[tuple[str, list[LineEvent]]]:
        """Take out of what is staged the newest pieces that would leave a partly filled
        provider request (see the module docstring); return them (nothing when the rule
        does not apply)."""
        staged = self._staged
        fill = self.fill_events
        if (len(staged) <= fill or self._staged_admin or self._staged_app
                or any(len(events) > SMALL_PIECE_LINES for _, events in staged)):
            return []
        spare = len(staged) % fill
        candidates = [i for i in range(len(staged) - 1, -1, -1)
                      if staged[i][0] not in self._held][:spare]
        if len(candidates) < spare:
            return []
        keep = set(candidates)
        held = [piece for i, piece in enumerate(staged) if i in keep]
        self._staged = [piece for i, piece in enumerate(staged) if i not in keep]
        return held

    def _seal(self, *, fill_requests: bool = False) -> None:
        """Cut what is staged into batches (each at most ``max_batch_lines`` lines, or app
        events) and queue them behind the ones waiting; with ``fill_requests``, pieces held
        back by :meth:`_hold_back` stay staged for the next send."""
        if self._staged_first is None:
            return
        first_order = self._staged_first
        held = self._hold_back() if fill_requests else []
        groups: list[list[RunLines]] = [
            [{"run_id": run_id, "channel": self.channels.logs(run_id), "events": events}
             for run_id, events in group]
            for group in pack_runs(self._staged, self.max_batch_lines)]
        messages = self._staged_admin
        events = self._staged_app
        self._clear_staged()
        if held:  # still staged, with the oldest order of what was staged (conservative)
            self._staged = held
            self._staged_last = {run_id: i for i, (run_id, _) in enumerate(held)}
            self._staged_first = first_order
            self.staged_lines = sum(len(piece) for _, piece in held)
            self._held = {run_id for run_id, _ in held}
        chunks = [events[i:i + self.max_batch_lines]
                  for i in range(0, len(events), self.max_batch_lines)]
        last = groups.pop() if groups else []
        batches = [new_batch(runs) for runs in groups]
        if last or messages or chunks:
            # The admin events and the first app events go with the last lines.
            batches.append(new_batch(last, messages, app=chunks.pop(0) if chunks else None))
        batches.extend(new_batch(app=chunk) for chunk in chunks)
        place_run_starts(batches, self._pending_starts)
        self._waiting.extend((first_order, batch, batch_lines(batch) + len(batch.get("app", [])))
                             for batch in batches)

    def send(self, *, fill_requests: bool = False) -> None:
        """Cut what is staged into batches, then enqueue waiting batches in order; stop at
        the first failure (backoff). ``fill_requests``: a periodic send nobody waits for,
        which may hold back a few small runs for the next one (see the module docstring)."""
        self._seal(fill_requests=fill_requests)
        if self._enqueue is None:
            self._give_up_unwired()
            return
        if not self._waiting or not self._streak.ready():
            self._bound()
            return
        while self._waiting:
            _, batch, _ = self._waiting[0]
            try:
                self._enqueue(batch)
            except Exception as exc:  # noqa: BLE001 - broker down: keep the batch, retry later
                self.failures += 1
                if self._streak.failed():
                    logger.warning("relaycast emitter: broker unavailable (%s: %s); %d batch(es) "
                                   "waiting", type(exc).__name__, exc, len(self._waiting))
                break
            self._waiting.popleft()
            self.enqueued += 1
            self._streak.succeeded()
        self._bound()

    def _bound(self) -> None:
        waiting = sum(n for _, _, n in self._waiting)
        while len(self._waiting) > 1 and waiting > self.max_waiting_lines:
            _, batch, weight = self._waiting.popleft()
            waiting -= weight
            lines = self._give_up(batch)
            logger.warning("relaycast emitter: broker unreachable; %d stored line(s) will not be "
                           "broadcast live (they are in the history), %d app event(s) are lost",
                           lines, len(batch.get("app", [])))

    def _give_up(self, batch: Batch) -> int:
        """Count what giving up ``batch`` loses; return its lines."""
        lines = batch_lines(batch)
        self.not_broadcast += lines
        self.admin_dropped += len(batch["admin"])
        self.app_dropped += len(batch.get("app", []))
        return lines

    def _give_up_unwired(self) -> None:
        if not self._waiting:
            return
        if not self._warned_unwired:
            self._warned_unwired = True
            logger.warning("relaycast emitter: no broadcast queue in this process (no broker: "
                           "set CELERY_BROKER_URL or REDIS_URL): lines are stored in SQL, not "
                           "broadcast live")
        while self._waiting:
            batch = self._waiting.popleft()[1]
            self._give_up(batch)
            if batch.get("app") and not self._warned_app_unwired:
                self._warned_app_unwired = True
                logger.warning("relaycast emitter: no broadcast queue in this process: app events "
                               "(broadcast()) are dropped and counted (they are not stored)")

    def clear(self) -> None:
        self._waiting.clear()
        self._clear_staged()
        self._new_streams()  # a forked child's events are a stream of their own
