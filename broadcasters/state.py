"""Shared broadcaster state: the policy every worker sees, over a :mod:`~broadcasters.backends`
backend (Redis, or one process's memory).

* Flags: a broadcaster disabled (reason, since, until, set by) or paused after a rate limit.
* The active broadcaster (the one carrying traffic), swapped atomically so that one worker
  announces a change.
* Per-minute counters per broadcaster and per pipeline, today's usage, and each
  broadcaster's last outcome (when it last delivered, when it last failed and why).

This module is the façade; the values and their vocabulary live beside it and are
re-exported here: flags in :mod:`~broadcasters.flags`, counters and outcomes in
:mod:`~broadcasters.counters`, histogram maths in :mod:`~broadcasters.histogram`, UTC days in
:mod:`~broadcasters.clock`, and every key's name in :mod:`~broadcasters.keys`.

Every key lives under one prefix and carries a TTL, so the state heals by itself: a quota
flag expires at its ``until``; counters after two hours; daily usage after two days; a
"credentials rejected" flag, which has no natural end, after a week.

If the backend is unreachable, the state *fails open*: no flag is seen as set, counters
are not recorded, the failure is counted in ``errors`` and logged (at most once every
30 s), and nothing raises — except the calls an operator makes by hand
(:meth:`SharedState.disable` with ``strict=True``, :meth:`SharedState.enable`), which must
say that nothing was changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from broadcasters import keys
from broadcasters.backends import StateBackend, StateUnavailable, backend_from_url
from broadcasters.clock import next_utc_midnight, utc_day
from broadcasters.counters import (
    COUNTER_TTL_S,
    OUTCOME_TTL_S,
    TOTALS_TTL_S,
    USAGE_TTL_S,
    Counts,
    Outcome,
    counts_from_send,
    sent_series,
)
from broadcasters.flags import (
    OPEN_ENDED_FLAG_TTL_S,
    BroadcasterState,
    Flag,
    FlagCause,
    worker_identity,
)
from broadcasters.histogram import LATENCY_BUCKETS_MS, bucket_of, bucket_percentile

__all__ = [
    "COUNTER_TTL_S", "LATENCY_BUCKETS_MS", "OPEN_ENDED_FLAG_TTL_S", "OUTCOME_TTL_S",
    "USAGE_TTL_S", "BroadcasterState", "Counts", "Flag", "FlagCause", "Outcome", "SharedState",
    "StateUnavailable", "bucket_of", "bucket_percentile", "counts_from_send",
    "next_utc_midnight", "sent_series", "state_from_url", "utc_day", "worker_identity",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ERROR_LOG_EVERY_S = 30.0


class SharedState:
    """Flags, counters and outcomes over a backend; fails open when the backend fails."""

    def __init__(self, backend: StateBackend, *, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        #: Calls that found the backend unreachable (failed open), in this process.
        self.errors = 0
        self._last_error_log = float("-inf")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def note_unavailable(self, what: str, exc: StateUnavailable) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error_log > _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            logger.warning("shared state unavailable (%s: %s); failing open, %d error(s) so far",
                           what, exc, self.errors)

    def fail_open(self, what: str, action: Callable[[], T], default: T) -> T:
        """``action()`` (a call on :attr:`backend`), or ``default`` (counted and logged) when
        the backend is unreachable: how every part of the shared state reads and writes
        (occupancy, the ordering gates) without raising."""
        try:
            return action()
        except StateUnavailable as exc:
            self.note_unavailable(what, exc)
            return default

    # Flags -----------------------------------------------------------------------------------

    def flags(self, names: Iterable[str]) -> dict[str, Flag]:
        """Each named broadcaster's active flag (disabled first, else paused): one round trip."""
        names = list(names)
        wanted = [keys.disabled(n) for n in names] + [keys.paused(n) for n in names]
        raw: list[str | None] = self.fail_open("read flags",
                                               lambda: self.backend.get_many(wanted), [])
        if not raw:
            return {}
        out: dict[str, Flag] = {}
        now = self.clock()
        for i, name in enumerate(names):
            for value in (raw[i], raw[i + len(names)]):
                flag = Flag.from_json(value) if value else None
                if flag and flag.active(now):
                    out[name] = flag
                    break
        return out

    def disable(self, name: str, reason: str, *, until: float | None,
                set_by: str | None = None, cause: FlagCause = FlagCause.OPERATOR,
                strict: bool = False) -> Flag:
        """Flag ``name`` off for every worker. ``strict``: raise :class:`StateUnavailable`
        rather than fail open (an operator must know that nothing was stored)."""
        now = self.clock()
        flag = Flag(reason=reason, since=now, until=until, set_by=set_by or worker_identity(),
                    cause=cause)
        ttl = (until - now) if until is not None else OPEN_ENDED_FLAG_TTL_S
        try:
            self.backend.set(keys.disabled(name), flag.to_json(), max(ttl, 0.001))
        except StateUnavailable as exc:
            if strict:
                raise
            self.note_unavailable("set flag", exc)
        logger.warning("broadcaster=%s disabled: %s (until %s, by %s)", name, reason,
                       "re-enabled" if until is None else
                       datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
                       flag.set_by, extra={"broadcaster": name})
        return flag

    def pause(self, name: str, seconds: float, reason: str, set_by: str | None = None) -> Flag:
        now = self.clock()
        flag = Flag(reason=reason, since=now, until=now + seconds,
                    set_by=set_by or worker_identity(), kind=BroadcasterState.PAUSED,
                    cause=FlagCause.RATE_LIMIT)
        self.fail_open("set pause",
                       lambda: self.backend.set(keys.paused(name), flag.to_json(), seconds), None)
        logger.info("broadcaster=%s paused for %.1fs: %s", name, seconds, reason,
                    extra={"broadcaster": name})
        return flag

    def enable(self, name: str) -> None:
        """Lift the disabled flag and any pause (raises :class:`StateUnavailable`)."""
        self.backend.delete([keys.disabled(name), keys.paused(name)])
        logger.info("broadcaster=%s enabled", name, extra={"broadcaster": name})

    # The active broadcaster ----------------------------------------------------------------

    def swap_active(self, name: str) -> str | None:
        """Record ``name`` as the broadcaster carrying traffic; return the previous one.

        Atomic (GETSET) so that when several workers switch at once exactly one of them
        sees the change and announces it. Unreachable: ``name`` (no change to announce).
        """
        unchanged: str | None = name
        return self.fail_open("swap active broadcaster",
                              lambda: self.backend.swap(keys.ACTIVE, name, OPEN_ENDED_FLAG_TTL_S),
                              unchanged)

    def active(self) -> str | None:
        active: str | None = self.fail_open("read active broadcaster",
                                            lambda: self.backend.get_many([keys.ACTIVE])[0], None)
        return active

    # Counters and outcomes -------------------------------------------------------------------

    def record(self, outcomes: Mapping[str, Counts], errors: Mapping[str, str] | None = None
               ) -> None:
        """Add one batch's counts, per broadcaster, to this minute and to today's usage; note
        each broadcaster's outcome (``errors``: the provider-wide failure that ended its call)."""
        errors = errors or {}
        now = self.clock()
        minute = int(now // 60)
        day = utc_day(now)
        counters: dict[str, dict[str, float]] = {}
        ttls: dict[str, float] = {}
        for name, counts in outcomes.items():
            fields = counts.fields()
            if fields:
                minute_key = keys.per_minute(keys.stats(name), minute)
                counters[minute_key], ttls[minute_key] = fields, COUNTER_TTL_S
                total_key = keys.totals(keys.stats(name))
                counters[total_key], ttls[total_key] = fields, TOTALS_TTL_S
            usage = counts.usage_fields()
            if usage:
                day_key = keys.per_day(keys.usage(name), day)
                counters[day_key], ttls[day_key] = usage, USAGE_TTL_S
        if counters:
            self.fail_open("record counters", lambda: self.backend.add(counters, ttls), None)
        for name, counts in outcomes.items():
            outcome: dict[str, str]
            if name in errors:
                outcome = {keys.OutcomeField.ERROR_AT: repr(now),
                           keys.OutcomeField.ERROR: errors[name][:300]}
            elif counts.sent:
                outcome = {keys.OutcomeField.OK_AT: repr(now)}
            else:
                continue
            self.fail_open("record outcome", partial(self.backend.set_fields, keys.outcome(name),
                                                     outcome, OUTCOME_TTL_S), None)

    def outcomes(self, names: Sequence[str]) -> dict[str, Outcome]:
        tables: list[dict[str, str]] = self.fail_open(
            "read outcomes", lambda: self.backend.hashes([keys.outcome(n) for n in names]), [])
        return {name: Outcome.of(table) for name, table in zip(names, tables, strict=False)}

    def _minute_tables(self, stem: str, minutes: int) -> list[dict[str, str]]:
        current = int(self.clock() // 60)
        wanted = [keys.per_minute(stem, m) for m in range(current - minutes + 1, current + 1)]
        tables: list[dict[str, str]] = self.fail_open(f"read {stem} counters",
                                                      lambda: self.backend.hashes(wanted), [])
        return tables

    def stats_tables(self, name: str, minutes: int = 60) -> list[dict[str, str]]:
        """``name``'s minute buckets of the last ``minutes`` minutes as stored, oldest first
        (this one last); empty when the state is unavailable. One round trip."""
        return self._minute_tables(keys.stats(name), minutes)

    def counts(self, name: str, minutes: int = 60) -> Counts:
        """Sum of the last ``minutes`` minute buckets (this one included)."""
        return Counts.of(self.stats_tables(name, minutes))

    def count_pipeline(self, counts: Mapping[str, float] | None = None, /, **fields: int
                       ) -> None:
        """Add pipeline-wide counters (dead-lettered batches, dropped lines) to this minute,
        named by :class:`~broadcasters.keys.PipelineCounter` and the gate's counters
        (``count_pipeline({PipelineCounter.DEAD_LETTERED: 1})``)."""
        key = keys.per_minute(keys.PIPELINE, int(self.clock() // 60))
        total = keys.totals(keys.PIPELINE)
        values: dict[str, float] = {str(k): v for k, v in {**(counts or {}), **fields}.items()
                                    if v}
        if values:
            self.fail_open("record pipeline counters",
                           lambda: self.backend.add({key: values, total: values},
                                                    {key: COUNTER_TTL_S, total: TOTALS_TTL_S}),
                           None)

    def pipeline_counts(self, minutes: int = 60) -> dict[str, int]:
        total: dict[str, int] = {}
        for table in self._minute_tables(keys.PIPELINE, minutes):
            for key, value in table.items():
                total[key] = total.get(key, 0) + int(float(value))
        return total

    def totals(self, stems: Sequence[str]) -> list[dict[str, float]] | None:
        """The running totals of each stem (``keys.stats(name)``, ``keys.PIPELINE``,
        ``keys.UNWATCHED``) in one round trip; None when the state is unavailable."""
        tables: list[dict[str, str]] | None = self.fail_open(
            "read totals", lambda: self.backend.hashes([keys.totals(s) for s in stems]), None)
        if tables is None:
            return None
        return [{k: float(v) for k, v in table.items()} for table in tables]

    def usage_today(self, name: str) -> dict[str, int]:
        today = self.today(keys.usage(name))
        return {str(field): today.get(field, 0) for field in keys.UsageField}

    def count_today(self, name: str, counts: Mapping[str, int] | None = None, /, **fields: int
                    ) -> None:
        """Add to today's (UTC) counters ``name`` (:data:`~broadcasters.keys.UNWATCHED`); they
        expire after two days."""
        key = keys.per_day(name, utc_day(self.clock()))
        total = keys.totals(name)
        values: dict[str, float] = {str(k): v for k, v in {**(counts or {}), **fields}.items()
                                    if v}
        if values:
            self.fail_open(f"record {name}",
                           lambda: self.backend.add({key: values, total: values},
                                                    {key: USAGE_TTL_S, total: TOTALS_TTL_S}),
                           None)

    def today(self, name: str) -> dict[str, int]:
        key = keys.per_day(name, utc_day(self.clock()))
        tables: list[dict[str, str]] = self.fail_open(f"read {name}",
                                                      lambda: self.backend.hashes([key]), [{}])
        return {k: int(float(v)) for k, v in tables[0].items()}

    # Observed states (alerts) ------------------------------------------------------------------

    def advance(self, states: Mapping[str, str], observed_at: float, ttl_s: float
                ) -> dict[str, str | None] | None:
        """Record each key's state observed at ``observed_at``; return the keys whose state
        this call changed, with the state each held before (None: none stored). Atomic, so
        that of several processes observing one change exactly one is told about it. None
        when the backend is unreachable (nothing can be decided: failing open)."""
        changed: dict[str, str | None] | None = self.fail_open(
            "advance observed states",
            lambda: self.backend.advance_many(states, observed_at, ttl_s), None)
        return changed

    # Documents (the latest health report) -----------------------------------------------------

    def put_document(self, key: str, text: str, ttl_s: float) -> None:
        self.fail_open(f"save {key}", lambda: self.backend.set(key, text, ttl_s), None)

    def document(self, key: str) -> str | None:
        text: str | None = self.fail_open(f"read {key}", lambda: self.backend.get_many([key])[0],
                                          None)
        return text

    def close(self) -> None:
        self.backend.close()


def state_from_url(redis_url: str | None, prefix: str, *,
                   clock: Callable[[], float] = time.time) -> SharedState:
    """Redis-backed state when a URL is given, in-memory otherwise."""
    return SharedState(backend_from_url(redis_url, prefix), clock=clock)
