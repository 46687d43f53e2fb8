"""Shared broadcaster state: the policy every worker sees, over a :mod:`~broadcasters.backends`
backend (Redis, or one process's memory).

* Flags: a broadcaster disabled (reason, since, until, set by) or paused after a rate limit.
* The active broadcaster (the one carrying traffic), swapped atomically so that one worker
  announces a change.
* Per-minute counters per broadcaster and per pipeline, today's usage, and each
  broadcaster's last outcome (when it last delivered, when it last failed and why).

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

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import TypeVar

from broadcasters.backends import StateBackend, StateUnavailable, backend_from_url
from broadcasters.errors import CATEGORIES

logger = logging.getLogger(__name__)

T = TypeVar("T")

COUNTER_TTL_S = 2 * 3600
USAGE_TTL_S = 2 * 86400
OPEN_ENDED_FLAG_TTL_S = 7 * 86400
OUTCOME_TTL_S = 86400
#: Latency histogram bucket upper bounds, milliseconds (the last bucket is open).
LATENCY_BUCKETS_MS = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_ERROR_LOG_EVERY_S = 30.0


class BroadcasterState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    PAUSED = "paused"


class FlagCause(StrEnum):
    """Who or what switched a broadcaster off."""

    OPERATOR = "operator"
    QUOTA = "quota"
    AUTH = "auth"
    RATE_LIMIT = "rate-limit"


@dataclass(frozen=True)
class Flag:
    """Why a broadcaster is off: ``until`` (epoch seconds) is None for "until re-enabled"."""

    reason: str
    since: float
    until: float | None
    set_by: str
    kind: BroadcasterState = BroadcasterState.DISABLED
    cause: FlagCause = FlagCause.OPERATOR

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Flag | None:
        try:
            data = json.loads(raw)
            data["kind"] = BroadcasterState(data.get("kind", BroadcasterState.DISABLED))
            data["cause"] = FlagCause(data.get("cause", FlagCause.OPERATOR))
            return cls(**data)
        except (ValueError, TypeError):
            return None


@dataclass
class Counts:
    """Counters of one broadcaster over a window."""

    sent: int = 0
    requests: int = 0
    skipped: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latency_buckets: dict[int, int] = field(default_factory=dict)
    latency_sum_ms: float = 0.0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def latency_percentile_ms(self, fraction: float) -> float | None:
        """Upper bound of the bucket holding the ``fraction`` percentile (None: no requests)."""
        return bucket_percentile(self.latency_buckets, fraction)

    @classmethod
    def of(cls, tables: Iterable[Mapping[str, str]]) -> Counts:
        """The sum of minute buckets as stored."""
        total = cls()
        for table in tables:
            total.add_table(table)
        return total

    def add_table(self, table: Mapping[str, str]) -> None:
        """Add one minute bucket as stored (``sent``, ``failed:quota``, ``lat:50``, ...)."""
        for key, raw in table.items():
            value = float(raw)
            if key == "sent":
                self.sent += int(value)
            elif key == "requests":
                self.requests += int(value)
            elif key == "skipped":
                self.skipped += int(value)
            elif key == "lat_sum_ms":
                self.latency_sum_ms += value
            elif key.startswith("failed:"):
                category = key.split(":", 1)[1]
                self.failed[category] = self.failed.get(category, 0) + int(value)
            elif key.startswith("lat:"):
                bound = int(key.split(":", 1)[1])
                self.latency_buckets[bound] = self.latency_buckets.get(bound, 0) + int(value)


@dataclass(frozen=True)
class Outcome:
    """A broadcaster's latest result: when it last delivered, when it last failed, and why."""

    ok_at: float | None = None
    error_at: float | None = None
    error: str | None = None

    def failing_since(self, now: float, within_s: float) -> float | None:
        """When its current run of failures began, if its latest call failed within ``within_s``."""
        if self.error_at is None or now - self.error_at > within_s:
            return None
        if self.ok_at is not None and self.ok_at >= self.error_at:
            return None
        return self.error_at


def next_utc_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def bucket_of(value: float, bounds: Sequence[int]) -> int:
    """The histogram bucket of ``value``: the first upper bound at or above it (past the last
    bound, an open bucket labelled ten times the last)."""
    for bound in bounds:
        if value <= bound:
            return bound
    return bounds[-1] * 10


def bucket_percentile(buckets: Mapping[int, int], fraction: float) -> float | None:
    """Upper bound of the bucket holding the ``fraction`` percentile of a histogram (counts
    per upper bound); None when it is empty."""
    total = sum(buckets.values())
    if total == 0:
        return None
    seen = 0
    for bound in sorted(buckets):
        seen += buckets[bound]
        if seen >= fraction * total:
            return float(bound)
    return float(max(buckets))


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def counts_from_send(latencies_ms: Sequence[float], sent: int, failed: Mapping[str, int],
                     skipped: int = 0) -> Counts:
    buckets: dict[int, int] = {}
    for latency in latencies_ms:
        bound = bucket_of(latency, LATENCY_BUCKETS_MS)
        buckets[bound] = buckets.get(bound, 0) + 1
    return Counts(sent=sent, requests=len(latencies_ms), skipped=skipped,
                  failed={c: n for c, n in failed.items() if n and c in CATEGORIES},
                  latency_buckets=buckets, latency_sum_ms=sum(latencies_ms))


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

    def _open(self, what: str, action: Callable[[], T], default: T) -> T:
        """``action()``, or ``default`` (counted and logged) when the backend is unreachable."""
        try:
            return action()
        except StateUnavailable as exc:
            self.note_unavailable(what, exc)
            return default

    # Flags -----------------------------------------------------------------------------------

    def flags(self, names: Iterable[str]) -> dict[str, Flag]:
        """Each named broadcaster's active flag (disabled first, else paused): one round trip."""
        names = list(names)
        keys = [f"disabled:{n}" for n in names] + [f"paused:{n}" for n in names]
        raw: list[str | None] = self._open("read flags", lambda: self.backend.get_many(keys), [])
        if not raw:
            return {}
        out: dict[str, Flag] = {}
        now = self.clock()
        for i, name in enumerate(names):
            for value in (raw[i], raw[i + len(names)]):
                flag = Flag.from_json(value) if value else None
                if flag and (flag.until is None or flag.until > now):
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
            self.backend.set(f"disabled:{name}", flag.to_json(), max(ttl, 0.001))
        except StateUnavailable as exc:
            if strict:
                raise
            self.note_unavailable("set flag", exc)
        logger.warning("broadcaster=%s disabled: %s (until %s, by %s)", name, reason,
                       "re-enabled" if until is None else
                       datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
                       flag.set_by)
        return flag

    def pause(self, name: str, seconds: float, reason: str, set_by: str | None = None) -> Flag:
        now = self.clock()
        flag = Flag(reason=reason, since=now, until=now + seconds,
                    set_by=set_by or worker_identity(), kind=BroadcasterState.PAUSED,
                    cause=FlagCause.RATE_LIMIT)
        self._open("set pause",
                   lambda: self.backend.set(f"paused:{name}", flag.to_json(), seconds), None)
        logger.info("broadcaster=%s paused for %.1fs: %s", name, seconds, reason)
        return flag

    def enable(self, name: str) -> None:
        """Lift the disabled flag and any pause (raises :class:`StateUnavailable`)."""
        self.backend.delete([f"disabled:{name}", f"paused:{name}"])
        logger.info("broadcaster=%s enabled", name)

    # The active broadcaster ----------------------------------------------------------------

    def swap_active(self, name: str) -> str | None:
        """Record ``name`` as the broadcaster carrying traffic; return the previous one.

        Atomic (GETSET) so that when several workers switch at once exactly one of them
        sees the change and announces it. Unreachable: ``name`` (no change to announce).
        """
        unchanged: str | None = name
        return self._open("swap active broadcaster",
                          lambda: self.backend.swap("active", name, OPEN_ENDED_FLAG_TTL_S),
                          unchanged)

    def active(self) -> str | None:
        active: str | None = self._open("read active broadcaster",
                                        lambda: self.backend.get_many(["active"])[0], None)
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
            fields: dict[str, float] = {}
            for key, value in (("sent", counts.sent), ("requests", counts.requests),
                               ("skipped", counts.skipped)):
                if value:
                    fields[key] = value
            for category, value in counts.failed.items():
                if value:
                    fields[f"failed:{category}"] = value
            for bound, value in counts.latency_buckets.items():
                fields[f"lat:{bound}"] = value
            if counts.latency_sum_ms:
                fields["lat_sum_ms"] = round(counts.latency_sum_ms, 3)
            if fields:
                counters[f"stats:{name}:{minute}"] = fields
                ttls[f"stats:{name}:{minute}"] = COUNTER_TTL_S
            if counts.sent or counts.requests:
                counters[f"usage:{name}:{day}"] = {"messages": counts.sent,
                                                   "requests": counts.requests}
                ttls[f"usage:{name}:{day}"] = USAGE_TTL_S
        if counters:
            self._open("record counters", lambda: self.backend.add(counters, ttls), None)
        for name, counts in outcomes.items():
            if name in errors:
                outcome = {"error_at": repr(now), "error": errors[name][:300]}
            elif counts.sent:
                outcome = {"ok_at": repr(now)}
            else:
                continue
            self._open("record outcome", partial(self.backend.set_fields, f"outcome:{name}",
                                                 outcome, OUTCOME_TTL_S), None)

    def outcomes(self, names: Sequence[str]) -> dict[str, Outcome]:
        tables: list[dict[str, str]] = self._open(
            "read outcomes", lambda: self.backend.hashes([f"outcome:{n}" for n in names]), [])
        out = {}
        for name, table in zip(names, tables, strict=False):
            out[name] = Outcome(
                ok_at=float(table["ok_at"]) if "ok_at" in table else None,
                error_at=float(table["error_at"]) if "error_at" in table else None,
                error=table.get("error"))
        return out

    def _minute_tables(self, prefix: str, minutes: int) -> list[dict[str, str]]:
        current = int(self.clock() // 60)
        keys = [f"{prefix}:{m}" for m in range(current - minutes + 1, current + 1)]
        tables: list[dict[str, str]] = self._open(f"read {prefix} counters",
                                                  lambda: self.backend.hashes(keys), [])
        return tables

    def stats_tables(self, name: str, minutes: int = 60) -> list[dict[str, str]]:
        """``name``'s minute buckets of the last ``minutes`` minutes as stored, oldest first
        (this one last); empty when the state is unavailable. One round trip."""
        return self._minute_tables(f"stats:{name}", minutes)

    def counts(self, name: str, minutes: int = 60) -> Counts:
        """Sum of the last ``minutes`` minute buckets (this one included)."""
        return Counts.of(self.stats_tables(name, minutes))

    def count_pipeline(self, **fields: int) -> None:
        """Add pipeline-wide counters (dead-lettered batches, dropped lines) to this minute."""
        key = f"pipeline:{int(self.clock() // 60)}"
        values: dict[str, float] = {k: v for k, v in fields.items() if v}
        if values:
            self._open("record pipeline counters",
                       lambda: self.backend.add({key: values}, {key: COUNTER_TTL_S}), None)

    def pipeline_counts(self, minutes: int = 60) -> dict[str, int]:
        total: dict[str, int] = {}
        for table in self._minute_tables("pipeline", minutes):
            for key, value in table.items():
                total[key] = total.get(key, 0) + int(float(value))
        return total

    def usage_today(self, name: str) -> dict[str, int]:
        today = self.today(f"usage:{name}")
        return {"messages": today.get("messages", 0), "requests": today.get("requests", 0)}

    def count_today(self, name: str, **fields: int) -> None:
        """Add to today's (UTC) counters ``name``; they expire after two days."""
        key = f"{name}:{utc_day(self.clock())}"
        values: dict[str, float] = {k: v for k, v in fields.items() if v}
        if values:
            self._open(f"record {name}", lambda: self.backend.add({key: values}, {key: USAGE_TTL_S}),
                       None)

    def today(self, name: str) -> dict[str, int]:
        key = f"{name}:{utc_day(self.clock())}"
        tables: list[dict[str, str]] = self._open(f"read {name}",
                                                  lambda: self.backend.hashes([key]), [{}])
        return {k: int(float(v)) for k, v in tables[0].items()}

    # Documents (the latest health report) -----------------------------------------------------

    def put_document(self, key: str, text: str, ttl_s: float) -> None:
        self._open(f"save {key}", lambda: self.backend.set(key, text, ttl_s), None)

    def document(self, key: str) -> str | None:
        text: str | None = self._open(f"read {key}", lambda: self.backend.get_many([key])[0], None)
        return text

    def close(self) -> None:
        self.backend.close()


def sent_series(tables: Sequence[Mapping[str, str]], minutes: int) -> list[int]:
    """Messages sent in each of ``minutes`` minute buckets (zeros when they were not read)."""
    if len(tables) != minutes:
        return [0] * minutes
    return [int(float(table.get("sent", 0))) for table in tables]


def state_from_url(redis_url: str | None, prefix: str, *,
                   clock: Callable[[], float] = time.time) -> SharedState:
    """Redis-backed state when a URL is given, in-memory otherwise."""
    return SharedState(backend_from_url(redis_url, prefix), clock=clock)
