"""The broadcaster manager: fallback, flags, retry decisions and counters, in one place.

For each batch the manager:

1. reads every broadcaster's shared flag in one round trip (cached for up to
   ``flag_cache_ms``) and skips the disabled or paused ones;
2. packs the batch for the next broadcaster's size limit and sends it;
3. acts on each failure by category:

   * ``quota``: disables the broadcaster for every worker until the next UTC midnight
     (or ``RELAYCAST_QUOTA_DISABLE``), then moves on;
   * ``auth``: disables it with reason "credentials rejected" until re-enabled;
   * ``rate_limited``: pauses it for every worker for ``retry_after_s``, then moves on;
   * ``transient``: moves on;
   * ``too_large`` / ``bad_request``: final for that message; never retried;

4. records counters and latency for every broadcaster touched in one write.

What no broadcaster delivered for a retryable reason comes back in
:attr:`SendReport.pending`; the caller (the Celery task) retries it with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from broadcasters.base import Broadcaster, Message
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    BroadcastError,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from broadcasters.packing import LogBatch, fit
from broadcasters.state import Counts, Flag, SharedState, counts_from_send, next_utc_midnight

logger = logging.getLogger(__name__)

Item = Message | LogBatch


@dataclass
class SendReport:
    """Outcome of :meth:`BroadcasterManager.send`."""

    delivered: list[tuple[Message, str]] = field(default_factory=list)
    #: Final failures: retrying cannot help (too large, bad request).
    failed: list[tuple[Message, BroadcastError]] = field(default_factory=list)
    #: Not delivered for a reason that may pass: retry these later.
    pending: list[Message] = field(default_factory=list)
    #: The last error each pending message met, for the retry log and dead letter.
    pending_errors: dict[str, BroadcastError] = field(default_factory=dict)
    #: Shortest sensible wait before a retry (a rate limit's retry-after), if known.
    retry_after_s: float | None = None
    skipped: dict[str, Flag] = field(default_factory=dict)

    @property
    def should_retry(self) -> bool:
        return bool(self.pending)

    def delivered_by(self, name: str) -> list[Message]:
        return [m for m, b in self.delivered if b == name]


class BroadcasterManager:
    """Tries broadcasters in priority order, honouring flags every worker shares."""

    def __init__(
        self,
        broadcasters: Sequence[Broadcaster],
        state: SharedState,
        *,
        quota_disable_s: float | None = None,
        flag_cache_ms: int = 1000,
        control_channel: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not broadcasters:
            raise ValueError("at least one broadcaster is needed")
        self.broadcasters = list(broadcasters)
        self.state = state
        self.quota_disable_s = quota_disable_s
        self.flag_cache_s = flag_cache_ms / 1000.0
        self.clock = clock
        self._flags: dict[str, Flag] = {}
        self._flags_read_at = float("-inf")
        self._lock = threading.Lock()
        self.last_delivered_by: str | None = None
        #: Where "provider-changed" events go (``{prefix}admin-events``); None: not announced.
        self.control_channel = control_channel
        self._active: str | None = None

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.broadcasters]

    # Flags -----------------------------------------------------------------------------------

    def current_flags(self) -> dict[str, Flag]:
        now = time.monotonic()
        if now - self._flags_read_at >= self.flag_cache_s:
            self._flags = self.state.flags(self.names)
            self._flags_read_at = now
        wall = self.clock()
        return {n: f for n, f in self._flags.items() if f.until is None or f.until > wall}

    def invalidate_flags(self) -> None:
        self._flags_read_at = float("-inf")

    def _set_flag(self, broadcaster: Broadcaster, error: BroadcastError) -> None:
        name = broadcaster.name
        if isinstance(error, QuotaExceeded):
            until = (self.clock() + self.quota_disable_s if self.quota_disable_s
                     else next_utc_midnight(self.clock()))
            self._flags[name] = self.state.disable(name, f"quota exceeded: {error.detail}"[:200],
                                                   until=until)
        elif isinstance(error, AuthFailed):
            self._flags[name] = self.state.disable(name, "credentials rejected", until=None)
        elif isinstance(error, RateLimited):
            self._flags[name] = self.state.pause(name, error.retry_after_s,
                                                 f"rate limited: {error.detail}"[:200])

    # Sending ---------------------------------------------------------------------------------

    def send(self, items: Sequence[Item]) -> SendReport:
        """Deliver ``items`` through the first broadcaster that takes them; never raises."""
        with self._lock:
            return self._send(items)

    def _send(self, items: Sequence[Item]) -> SendReport:
        report = SendReport()
        counts: dict[str, Counts] = {}
        last_error: dict[str, BroadcastError] = {}
        pending: Sequence[Item] = items
        remaining: list[Message] = []
        flags = self.current_flags()
        for broadcaster in self.broadcasters:
            if not pending:
                break
            name = broadcaster.name
            messages = [m for item in pending for m in fit(item, broadcaster.max_message_bytes)]
            flag = flags.get(name)
            if flag is not None:
                report.skipped[name] = flag
                counts[name] = Counts(skipped=len(messages))
                pending = remaining = messages
                continue
            result = broadcaster.send(messages)
            report.delivered.extend((m, name) for m in result.delivered)
            if result.delivered:
                self.last_delivered_by = name
            failed_by_category: dict[str, int] = {}
            remaining = []
            for message, error in result.failed:
                failed_by_category[error.category] = failed_by_category.get(error.category, 0) + 1
                if isinstance(error, PayloadTooLarge | BadRequest):
                    report.failed.append((message, error))
                else:
                    remaining.append(message)
                    last_error[message.id] = error
            counts[name] = counts_from_send(result.latencies_ms, len(result.delivered),
                                            failed_by_category)
            provider_error = next((last_error[m.id] for m in remaining), None)
            if provider_error is not None:
                self._set_flag(broadcaster, provider_error)
                if isinstance(provider_error, RateLimited):
                    wait = provider_error.retry_after_s
                    report.retry_after_s = min(wait, report.retry_after_s or wait)
            pending = remaining
        report.pending = remaining
        off = _every_broadcaster_off(report.skipped)
        report.pending_errors = {m.id: last_error.get(m.id, off) for m in remaining}
        self.state.record(counts)
        if report.delivered:
            self._note_active(report.delivered[0][1], report)
        return report

    def _note_active(self, carrier: str, report: SendReport) -> None:
        """When the broadcaster carrying traffic changes, say so once for every worker."""
        if carrier == self._active:
            return
        self._active = carrier
        previous = self.state.swap_active(carrier)
        if previous is None or previous == carrier or self.control_channel is None:
            return
        reason = report.skipped.get(previous) or self._flags.get(previous)
        data = {"type": "provider-changed", "from": previous, "to": carrier,
                "reason": reason.reason if reason else None, "ts": int(self.clock() * 1000)}
        logger.warning("active broadcaster changed: %s -> %s (%s)", previous, carrier,
                       data["reason"] or "recovered")
        announcement = Message.from_data(self.control_channel, "provider-changed", data,
                                         f"control:{data['ts']}:{carrier}")
        broadcaster = next(b for b in self.broadcasters if b.name == carrier)
        broadcaster.send([announcement])

    def close(self) -> None:
        for broadcaster in self.broadcasters:
            broadcaster.close()


def _every_broadcaster_off(skipped: dict[str, Flag]) -> BroadcastError:
    reasons = ", ".join(f"{n}: {f.reason}" for n, f in skipped.items()) or "no broadcaster"
    return TransientError(f"every broadcaster is off ({reasons})")
