"""The emitter's outbox: stored lines on their way to the broadcast queue.

Each flush becomes (usually) one broadcast task carrying every line and admin event of
the flush; a backlog after an outage is cut into tasks of at most ``max_batch_lines``
lines, so no single task message grows without bound. Batches are enqueued in order; while
the broker is down they wait (the lines are already in SQL), retried with backoff, and
are bounded: past ``max_waiting_lines`` the oldest batch is given up — its lines stay in
SQL (``relaycast logs``, the history endpoint, and the sweeper still have them) — and
counted.

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
from broadcasters.wire import AdminMessage, Batch, Channels, RunLines, batch_lines, new_batch, pack_runs
from workflows.buffer import AdminEntry
from workflows.cleaning import Cleaning, clean_data
from workflows.writer import Stored

logger = logging.getLogger("workflows.emitter")

Enqueue = Callable[[Batch], None]


class Outbox:
    def __init__(self, enqueue: Enqueue | None, channels: Channels, *, max_batch_lines: int,
                 max_waiting_lines: int, cleaning: Cleaning | None = None) -> None:
        self._enqueue = enqueue
        self.channels = channels
        self.max_batch_lines = max_batch_lines
        self.max_waiting_lines = max_waiting_lines
        self._cleaning = cleaning if cleaning is not None else Cleaning()
        #: (order of the first line or event it carries, batch, lines)
        self._waiting: deque[tuple[int, Batch, int]] = deque()
        self._streak = FailureStreak()
        self._warned_unwired = False
        self.enqueued = 0
        self.failures = 0
        #: Stored in SQL but never handed to the broadcast queue (broker down past the bound).
        self.not_broadcast = 0
        #: Admin events given up with such a batch (they are not stored anywhere else).
        self.admin_dropped = 0

    def first_waiting_order(self) -> int | None:
        return self._waiting[0][0] if self._waiting else None

    def waiting_batches(self) -> int:
        return len(self._waiting)

    def add(self, first_order: int, stored: Stored, admin: list[AdminEntry]) -> None:
        """Cut ``stored`` lines and ``admin`` events into batches and queue them."""
        groups: list[list[RunLines]] = [
            [{"run_id": run_id, "channel": self.channels.logs(run_id), "events": events}
             for run_id, events in group]
            for group in pack_runs(stored, self.max_batch_lines)]
        messages: list[AdminMessage] = [
            {"channel": self.channels.admin_events, "event": event_type,
             "data": clean_data(payload, self._cleaning), "id": f"admin:{uuid.uuid4().hex}"}
            for _, event_type, payload in admin]
        last = groups.pop() if groups else []
        batches = [new_batch(runs) for runs in groups]
        if last or messages:
            batches.append(new_batch(last, messages))  # the admin events go with the last
        self._waiting.extend((first_order, batch, batch_lines(batch)) for batch in batches)

    def send(self) -> None:
        """Enqueue waiting batches in order; stop at the first failure (backoff)."""
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
            _, batch, lines = self._waiting.popleft()
            waiting -= lines
            self.not_broadcast += lines
            self.admin_dropped += len(batch["admin"])
            logger.warning("relaycast emitter: broker unreachable; %d stored line(s) will not be "
                           "broadcast live (they are in the history)", lines)

    def _give_up_unwired(self) -> None:
        if not self._waiting:
            return
        if not self._warned_unwired:
            self._warned_unwired = True
            logger.warning("relaycast emitter: no broadcast queue in this process (no broker: "
                           "set CELERY_BROKER_URL or REDIS_URL): lines are stored in SQL, not "
                           "broadcast live")
        while self._waiting:
            _, batch, lines = self._waiting.popleft()
            self.not_broadcast += lines
            self.admin_dropped += len(batch["admin"])

    def clear(self) -> None:
        self._waiting.clear()
