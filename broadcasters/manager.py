"""The broadcaster manager: fallback, flags, retry decisions and counters, in one place.

For each batch the manager:

1. reads every broadcaster's shared flag in one round trip (cached for up to
   ``flag_cache_ms``) and skips the disabled or paused ones;
2. packs the batch for the next broadcaster's size limit and sends it;
3. acts on each failure by what its class says (:mod:`broadcasters.errors`): a final one
   (too large, bad request) fails that message for good; any other moves the message on
   to the next broadcaster, after flagging the failing one as the error asks (off until the
   quota resets, off until re-enabled, paused for ``retry_after_s``);
4. records counters, latency and each broadcaster's outcome in one write.

**Live and non-live broadcasters.** A broadcaster such as ``log`` writes messages where no
browser receives them. When a live broadcaster (Pusher, Ably, Socket.IO) is configured, a
message that only ``log`` took is still owed to a live one: it is reported in
:attr:`SendReport.logged` *and* kept in :attr:`SendReport.pending`, so the caller retries
it (live broadcasters only) until a live one carries it. With no live broadcaster
configured at all (the embedded default), ``log`` is where lines go, and that is final.

What no live broadcaster delivered for a retryable reason comes back in
:attr:`SendReport.pending`, with :attr:`SendReport.next_chance_s`: how soon a live
broadcaster could take it (0 after a transient failure; a pause's end; None when every live
broadcaster is off until an operator or a quota reset says otherwise). The caller (the
Celery task) retries with backoff when a retry can help, and stops when it cannot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from broadcasters import keys
from broadcasters.base import Broadcaster, Message
from broadcasters.errors import BadRequest, BroadcastError, FlagAction, TransientError
from broadcasters.logcontext import current_broadcaster
from broadcasters.packing import LogBatch, fit
from broadcasters.state import (
    Counts,
    Flag,
    FlagCause,
    SharedState,
    counts_from_send,
    next_utc_midnight,
)
from broadcasters.wire import LOG_EVENT, PROVIDER_CHANGED_EVENT, message_id

logger = logging.getLogger(__name__)

Item = Message | LogBatch


@dataclass
class SendReport:
    """Outcome of :meth:`BroadcasterManager.send`."""

    #: Delivered live: (message, broadcaster).
    delivered: list[tuple[Message, str]] = field(default_factory=list)
    #: Taken only by a non-live broadcaster (``log``) while a live one is owed: also pending.
    logged: list[tuple[Message, str]] = field(default_factory=list)
    #: Final failures: retrying cannot help (too large, bad request).
    failed: list[tuple[Message, BroadcastError]] = field(default_factory=list)
    #: Not delivered live for a reason that may pass: retry these later.
    pending: list[Message] = field(default_factory=list)
    #: The last error each pending message met, for the retry log and dead letter.
    pending_errors: dict[str, BroadcastError] = field(default_factory=dict)
    #: Shortest sensible wait before a retry (a rate limit's retry-after), if known.
    retry_after_s: float | None = None
    #: Seconds until a live broadcaster could take the pending messages (None: not by itself).
    next_chance_s: float | None = None
    skipped: dict[str, Flag] = field(default_factory=dict)


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
        mirror: Broadcaster | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not broadcasters:
            raise ValueError("at least one broadcaster is needed")
        self.broadcasters = list(broadcasters)
        self.state = state
        self.quota_disable_s = quota_disable_s
        self.flag_cache_s = flag_cache_ms / 1000.0
        self.clock = clock
        #: Measures the flag cache's age (monotonic: a wall-clock step never stretches it).
        self.monotonic = monotonic
        self._flags: dict[str, Flag] = {}
        self._flags_read_at = float("-inf")
        self._lock = threading.Lock()
        #: Where "provider-changed" events go (``{prefix}admin-events``); None: not announced.
        self.control_channel = control_channel
        self._active: str | None = None
        #: Is any live broadcaster configured? If not, non-live deliveries are final.
        self.has_live = any(b.live for b in self.broadcasters)
        #: Also gets a copy of everything delivered live, best effort (``RELAYCAST_MIRROR``).
        self.mirror = mirror

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.broadcasters]

    def is_live(self, name: str) -> bool:
        return any(b.live for b in self.broadcasters if b.name == name)

    # Flags -----------------------------------------------------------------------------------

    def current_flags(self) -> dict[str, Flag]:
        now = self.monotonic()
        if now - self._flags_read_at >= self.flag_cache_s:
            self._flags = self.state.flags(self.names)
            self._flags_read_at = now
        wall = self.clock()
        return {n: f for n, f in self._flags.items() if f.until is None or f.until > wall}

    def _set_flag(self, name: str, error: BroadcastError) -> None:
        if error.flag is FlagAction.UNTIL_RESET:
            now = self.clock()
            until = now + self.quota_disable_s if self.quota_disable_s else next_utc_midnight(now)
            self._flags[name] = self.state.disable(
                name, f"quota exceeded: {error.detail}"[:200], until=until, cause=FlagCause.QUOTA)
        elif error.flag is FlagAction.UNTIL_ENABLED:
            self._flags[name] = self.state.disable(name, "credentials rejected", until=None,
                                                   cause=FlagCause.AUTH)
        elif error.flag is FlagAction.PAUSE:
            wait = getattr(error, "retry_after_s", 1.0)
            self._flags[name] = self.state.pause(name, wait, f"rate limited: {error.detail}"[:200])

    # Sending ---------------------------------------------------------------------------------

    def send(self, items: Sequence[Item], *, live_only: bool = False) -> SendReport:
        """Deliver ``items`` through the first broadcaster that takes them; never raises.

        ``live_only``: skip non-live broadcasters (a retry of messages ``log`` already took).
        """
        with self._lock:
            return self._send(items, live_only)

    def _send(self, items: Sequence[Item], live_only: bool) -> SendReport:
        report = SendReport()
        counts: dict[str, Counts] = {}
        errors: dict[str, str] = {}
        last_error: dict[str, BroadcastError] = {}
        pending: Sequence[Item] = items
        owed: list[Message] = []
        logged: set[str] = set()
        flags = self.current_flags()
        chances: list[float | None] = []
        now = self.clock()
        for broadcaster in self.broadcasters:
            if not pending:
                break
            if live_only and not broadcaster.live:
                continue
            name = broadcaster.name
            messages = self._fit(pending, broadcaster.max_message_bytes, report)
            flag = flags.get(name)
            if flag is not None:
                report.skipped[name] = flag
                counts[name] = Counts(skipped=len(messages))
                if broadcaster.live:
                    chances.append(None if flag.until is None else max(0.0, flag.until - now))
                pending = owed = messages
                continue
            token = current_broadcaster.set(name)  # what its own log lines are about
            try:
                attempt = broadcaster.send(messages)
            finally:
                current_broadcaster.reset(token)
            final_by_category: dict[str, int] = {}
            owed = []
            for message, error in attempt.failed:
                final_by_category[error.category] = final_by_category.get(error.category, 0) + 1
                if error.retryable:
                    owed.append(message)
                    last_error[message.id] = error
                else:
                    report.failed.append((message, error))
            counts[name] = counts_from_send(attempt.latencies_ms, len(attempt.delivered),
                                            final_by_category)
            provider_error = next((last_error[m.id] for m in owed), None)
            if provider_error is not None:
                errors[name] = str(provider_error)
                self._set_flag(name, provider_error)
                if broadcaster.live:
                    chances.append(self._chance_after(provider_error))
                wait = getattr(provider_error, "retry_after_s", None)
                if wait is not None:
                    report.retry_after_s = min(wait, report.retry_after_s or wait)
            if broadcaster.live or not self.has_live:
                report.delivered.extend((m, name) for m in attempt.delivered)
                pending = owed
            else:
                # A copy went where no browser reads it: still owed to a live broadcaster.
                report.logged.extend((m, name) for m in attempt.delivered
                                     if m.id not in logged)
                logged.update(m.id for m in attempt.delivered)
                owed = [*owed, *attempt.delivered]
                pending = owed
        report.pending = owed
        off = _every_broadcaster_off(report.skipped)
        report.pending_errors = {m.id: last_error.get(m.id, off) for m in report.pending}
        if report.pending:
            known = [c for c in chances if c is not None]
            report.next_chance_s = min(known) if known else None
        self.state.record(counts, errors)
        carrier = (report.delivered[0][1] if report.delivered
                   else report.logged[0][1] if report.logged else None)
        if carrier is not None:
            self._note_active(carrier, report, set(errors))
        self._copy_to_mirror([m for m, name in report.delivered])
        return report

    def _copy_to_mirror(self, messages: Sequence[Message]) -> None:
        """Best effort: what went out live also goes to the mirror (old front ends on another
        transport during a migration). Counted apart (``mirror:NAME``); never retried, never
        a reason to retry the batch."""
        mirror = self.mirror
        if mirror is None or not messages:
            return
        copies = [m for m in messages if m.size_bytes <= mirror.max_message_bytes]
        attempt = mirror.send(copies)
        failed: dict[str, int] = {}
        for _, error in attempt.failed:
            failed[error.category] = failed.get(error.category, 0) + 1
        skipped = len(messages) - len(copies)
        self.state.record({mirror_name(mirror.name): counts_from_send(
            attempt.latencies_ms, len(attempt.delivered), failed, skipped=skipped)},
            {mirror_name(mirror.name): str(attempt.failed[0][1])} if attempt.failed else None)

    @staticmethod
    def _fit(items: Sequence[Item], max_bytes: int, report: SendReport) -> list[Message]:
        """Pack ``items`` for a size limit; an item that cannot be encoded fails alone."""
        messages: list[Message] = []
        for item in items:
            try:
                messages.extend(fit(item, max_bytes))
            except Exception as exc:
                logger.exception("an item could not be encoded for broadcasting")
                report.failed.append((_stand_in(item), BadRequest(
                    f"cannot be encoded: {type(exc).__name__}: {exc}"[:300])))
        return messages

    @staticmethod
    def _chance_after(error: BroadcastError) -> float | None:
        if error.flag is FlagAction.PAUSE:
            return float(getattr(error, "retry_after_s", 1.0))
        if error.flag is None:
            return 0.0  # transient: worth trying again after a backoff
        return None  # off until the quota resets or an operator re-enables it

    def _note_active(self, carrier: str, report: SendReport, failed_now: set[str]) -> None:
        """When the broadcaster carrying traffic changes, say so once for every worker."""
        if carrier == self._active:
            return
        self._active = carrier
        # The carrier as reported before this one (before any report: where it was expected).
        previous = traffic_carrier(self.names, {}, self.state.swap_active(carrier), self.is_live)
        if previous == carrier or self.control_channel is None:
            return
        reason = report.skipped.get(previous) or self._flags.get(previous)
        why = reason.reason if reason else (str(report.pending_errors[report.logged[0][0].id])
                                            if report.logged and report.pending_errors else None)
        data = {"type": PROVIDER_CHANGED_EVENT, "from": previous, "to": carrier,
                "live": self.is_live(carrier),
                "reason": why, "ts": int(self.clock() * 1000)}
        logger.warning("active broadcaster changed: %s -> %s (%s)", previous, carrier,
                       data["reason"] or "recovered")
        announcement = Message.from_data(self.control_channel, PROVIDER_CHANGED_EVENT, data,
                                         f"control:{data['ts']}:{carrier}")
        # Announced by the new carrier and, when it still works (an operator switched it off,
        # or it is back), by the previous one: browsers listening there must hear it too.
        for broadcaster in self.broadcasters:
            if broadcaster.name == carrier or (
                    broadcaster.name == previous and previous not in failed_now
                    and (previous not in report.skipped
                         or report.skipped[previous].cause is FlagCause.OPERATOR)):
                broadcaster.send([announcement])
        if self.mirror is not None and self.mirror.name not in (carrier, previous):
            self.mirror.send([announcement])

    def close(self) -> None:
        for broadcaster in self.broadcasters:
            broadcaster.close()
        if self.mirror is not None:
            self.mirror.close()


def traffic_carrier(order: Sequence[str], flags: Mapping[str, Flag], reported: str | None,
                    is_live: Callable[[str], bool]) -> str:
    """The broadcaster carrying traffic, the one answer for the manager (which announces a
    change from it) and the API (which tells browsers which transport to use).

    It is the one the workers last reported (``reported``: the state's ``active``; before any
    report, the first listed), unless that one is now flagged off: then the one the workers
    move to on their next send, by the manager's rule (:meth:`BroadcasterManager.send` tries
    ``order`` skipping flagged broadcasters, and a live delivery carries traffic before a copy
    only ``log`` took): the first listed not flagged that reaches browsers, else the first not
    flagged. With every one flagged off, still the one reported."""
    current = reported or order[0]
    if current not in flags:
        return current
    unflagged = [name for name in order if name not in flags]
    return next((name for name in unflagged if is_live(name)),
                unflagged[0] if unflagged else current)


def mirror_name(name: str) -> str:
    """The name a mirror's counters are kept under."""
    return keys.mirror(name)


def _stand_in(item: Item) -> Message:
    """A message standing for an item that could not be packed (for the bookkeeping)."""
    if isinstance(item, Message):
        return item
    seqs = [int(e["seq"]) for e in item.events if isinstance(e.get("seq"), int)]
    span = (min(seqs), max(seqs)) if seqs else None
    return Message(item.channel, LOG_EVENT, "{}",
                   message_id(item.run_id, *span) if span else f"{item.run_id}:?", seqs=span)


def merge_reports(reports: Sequence[SendReport]) -> SendReport:
    """One report for several sends of one batch (the ordering gate's turns)."""
    if len(reports) == 1:
        return reports[0]
    merged = SendReport()
    chances: list[float | None] = []
    for report in reports:
        merged.delivered.extend(report.delivered)
        merged.logged.extend(report.logged)
        merged.failed.extend(report.failed)
        merged.pending.extend(report.pending)
        merged.pending_errors.update(report.pending_errors)
        merged.skipped.update(report.skipped)
        if report.retry_after_s is not None:
            merged.retry_after_s = min(report.retry_after_s,
                                       merged.retry_after_s or report.retry_after_s)
        if report.pending:
            chances.append(report.next_chance_s)
    known = [c for c in chances if c is not None]
    merged.next_chance_s = min(known) if known else None
    return merged


def _every_broadcaster_off(skipped: dict[str, Flag]) -> BroadcastError:
    reasons = ", ".join(f"{n}: {f.reason}" for n, f in skipped.items()) or "no broadcaster"
    return TransientError(f"every broadcaster is off ({reasons})")
