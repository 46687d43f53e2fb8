"""Shared broadcaster state: flags and counters every worker sees.

Two layers, after dramatiq's rate-limit ``backend`` / ``window`` split:

* a *store* of primitives (get many, set with TTL, delete, add to counters with TTL):
  :class:`RedisStore` for real deployments, :class:`MemoryStore` (same interface) for the
  embedded default and single-process use;
* :class:`SharedState`, the policy on top: disabled flags with reason / since / until /
  set-by, short pauses after a rate limit, per-minute counters and today's usage.

Every key lives under one prefix and carries a TTL, so the state heals by itself: a
quota flag expires at its ``until``; counters expire after two hours; daily usage after
two days; a "credentials rejected" flag, which has no natural end, after a week.

If the store fails (Redis unreachable), :class:`SharedState` *fails open*: no flag is
seen as set, counters are not recorded, the failure is counted in ``store_errors`` and
logged (at most once every 30 s), and nothing raises.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import redis

from broadcasters.errors import CATEGORIES

logger = logging.getLogger(__name__)

COUNTER_TTL_S = 2 * 3600
USAGE_TTL_S = 2 * 86400
OPEN_ENDED_FLAG_TTL_S = 7 * 86400
#: Latency histogram bucket upper bounds, milliseconds (the last bucket is open).
LATENCY_BUCKETS_MS = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Store(Protocol):
    """Primitives a state store offers; keys are given without the prefix."""

    def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    def set(self, key: str, value: str, ttl_s: float) -> None: ...

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        """Set ``key`` and return its previous value, atomically."""

    def delete(self, keys: Sequence[str]) -> None: ...

    def add(self, counters: Mapping[str, Mapping[str, float]], ttl_s: Mapping[str, float]) -> None:
        """Add to hash fields: ``counters[key][field] += n``; (re)set each key's TTL."""

    def get_counters(self, keys: Sequence[str]) -> list[dict[str, float]]: ...

    def scan(self, pattern: str) -> list[str]: ...


class RedisStore:
    """Redis primitives under ``prefix``; one round trip per call (pipelines)."""

    def __init__(self, client: redis.Redis, prefix: str = "relaycast:") -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "relaycast:", timeout_s: float = 0.5) -> RedisStore:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            decode_responses=True, health_check_interval=30,
        )
        return cls(client, prefix)

    def _k(self, key: str) -> str:
        return self.prefix + key

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values = self.client.mget([self._k(k) for k in keys])
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        self.client.set(self._k(key), value, px=max(1, int(ttl_s * 1000)))

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        previous: Any = self.client.set(self._k(key), value, px=max(1, int(ttl_s * 1000)), get=True)
        if isinstance(previous, bytes):
            return previous.decode()
        return previous if isinstance(previous, str) else None

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.delete(*(self._k(k) for k in keys))

    def add(self, counters: Mapping[str, Mapping[str, float]], ttl_s: Mapping[str, float]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, fields in counters.items():
            full = self._k(key)
            for name, amount in fields.items():
                if isinstance(amount, int):
                    pipe.hincrby(full, name, amount)
                else:
                    pipe.hincrbyfloat(full, name, amount)
            pipe.expire(full, int(ttl_s[key]))
        pipe.execute()

    def get_counters(self, keys: Sequence[str]) -> list[dict[str, float]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self._k(key))
        return [
            {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
            for raw in pipe.execute()
        ]

    def scan(self, pattern: str) -> list[str]:
        start = len(self.prefix)
        return [
            (k.decode() if isinstance(k, bytes) else k)[start:]
            for k in self.client.scan_iter(match=self._k(pattern), count=500)
        ]


class MemoryStore:
    """The same primitives in one process's memory (thread-safe, TTLs honoured)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> Any:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= time.time():
            del self._values[key]
            return None
        return entry[0]

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        with self._lock:
            values = [self._live(k) for k in keys]
            return [v if isinstance(v, str) else None for v in values]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            self._values[key] = (value, time.time() + ttl_s)

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        with self._lock:
            previous = self._live(key)
            self._values[key] = (value, time.time() + ttl_s)
            return previous if isinstance(previous, str) else None

    def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def add(self, counters: Mapping[str, Mapping[str, float]], ttl_s: Mapping[str, float]) -> None:
        with self._lock:
            for key, fields in counters.items():
                current = self._live(key)
                table: dict[str, float] = dict(current) if isinstance(current, dict) else {}
                for name, amount in fields.items():
                    table[name] = table.get(name, 0) + amount
                self._values[key] = (table, time.time() + ttl_s[key])

    def get_counters(self, keys: Sequence[str]) -> list[dict[str, float]]:
        with self._lock:
            out = []
            for key in keys:
                value = self._live(key)
                out.append(dict(value) if isinstance(value, dict) else {})
            return out

    def scan(self, pattern: str) -> list[str]:
        import fnmatch

        with self._lock:
            return [k for k in list(self._values) if self._live(k) is not None
                    and fnmatch.fnmatchcase(k, pattern)]


@dataclass(frozen=True)
class Flag:
    """Why a broadcaster is off: ``until`` (epoch seconds) is None for "until re-enabled"."""

    reason: str
    since: float
    until: float | None
    set_by: str
    kind: str = "disabled"  # or "paused" (a short stop after a rate limit)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Flag | None:
        try:
            data = json.loads(raw)
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
        total = sum(self.latency_buckets.values())
        if total == 0:
            return None
        rank = fraction * total
        seen = 0
        for bound in sorted(self.latency_buckets):
            seen += self.latency_buckets[bound]
            if seen >= rank:
                return float(bound)
        return float(max(self.latency_buckets))


def next_utc_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _bucket(latency_ms: float) -> int:
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return bound
    return LATENCY_BUCKETS_MS[-1] * 10


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class SharedState:
    """Flags and counters policy over a :class:`Store`; fails open when the store fails."""

    def __init__(self, store: Store, *, clock: Any = time.time) -> None:
        self.store = store
        self.clock = clock
        self.store_errors = 0
        self._last_error_log = 0.0

    @property
    def backend_name(self) -> str:
        return "redis" if isinstance(self.store, RedisStore) else "memory"

    def _failed(self, what: str, exc: Exception) -> None:
        self.store_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 30:
            self._last_error_log = now
            logger.warning("shared state unavailable (%s: %s); failing open, %d error(s) so far",
                           what, exc, self.store_errors)

    # Flags -----------------------------------------------------------------------------------

    def flags(self, names: Iterable[str]) -> dict[str, Flag]:
        """Each named broadcaster's active flag (disabled first, else paused): one round trip."""
        names = list(names)
        keys = [f"disabled:{n}" for n in names] + [f"paused:{n}" for n in names]
        try:
            raw = self.store.get_many(keys)
        except (redis.RedisError, OSError) as exc:
            self._failed("read flags", exc)
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
                set_by: str | None = None) -> Flag:
        now = self.clock()
        flag = Flag(reason=reason, since=now, until=until, set_by=set_by or worker_identity())
        ttl = (until - now) if until is not None else OPEN_ENDED_FLAG_TTL_S
        try:
            self.store.set(f"disabled:{name}", flag.to_json(), max(ttl, 0.001))
        except (redis.RedisError, OSError) as exc:
            self._failed("set flag", exc)
        logger.warning("broadcaster=%s disabled: %s (until %s, by %s)", name, reason,
                       "re-enabled" if until is None else
                       datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
                       flag.set_by)
        return flag

    def pause(self, name: str, seconds: float, reason: str, set_by: str | None = None) -> Flag:
        now = self.clock()
        flag = Flag(reason=reason, since=now, until=now + seconds,
                    set_by=set_by or worker_identity(), kind="paused")
        try:
            self.store.set(f"paused:{name}", flag.to_json(), seconds)
        except (redis.RedisError, OSError) as exc:
            self._failed("set pause", exc)
        logger.info("broadcaster=%s paused for %.1fs: %s", name, seconds, reason)
        return flag

    def enable(self, name: str) -> None:
        """Lift the disabled flag and any pause (raises if the store is unreachable)."""
        self.store.delete([f"disabled:{name}", f"paused:{name}"])
        logger.info("broadcaster=%s enabled", name)

    # The active broadcaster ----------------------------------------------------------------

    def swap_active(self, name: str) -> str | None:
        """Record ``name`` as the broadcaster carrying traffic; return the previous one.

        Atomic (GETSET) so that when several workers switch at once exactly one of them
        sees the change and announces it.
        """
        try:
            previous = self.store.swap("active", name, OPEN_ENDED_FLAG_TTL_S)
        except (redis.RedisError, OSError) as exc:
            self._failed("swap active broadcaster", exc)
            return name
        return previous

    def active(self) -> str | None:
        try:
            return self.store.get_many(["active"])[0]
        except (redis.RedisError, OSError) as exc:
            self._failed("read active broadcaster", exc)
            return None

    # Counters --------------------------------------------------------------------------------

    def record(self, outcomes: Mapping[str, Counts]) -> None:
        """Add one batch's counts, per broadcaster, to this minute and to today's usage."""
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
        if not counters:
            return
        try:
            self.store.add(counters, ttls)
        except (redis.RedisError, OSError) as exc:
            self._failed("record counters", exc)

    def counts(self, name: str, minutes: int = 60) -> Counts:
        """Sum of the last ``minutes`` minute buckets (this one included)."""
        current = int(self.clock() // 60)
        keys = [f"stats:{name}:{m}" for m in range(current - minutes + 1, current + 1)]
        try:
            tables = self.store.get_counters(keys)
        except (redis.RedisError, OSError) as exc:
            self._failed("read counters", exc)
            tables = []
        total = Counts()
        for table in tables:
            for key, value in table.items():
                if key == "sent":
                    total.sent += int(value)
                elif key == "requests":
                    total.requests += int(value)
                elif key == "skipped":
                    total.skipped += int(value)
                elif key == "lat_sum_ms":
                    total.latency_sum_ms += value
                elif key.startswith("failed:"):
                    category = key.split(":", 1)[1]
                    total.failed[category] = total.failed.get(category, 0) + int(value)
                elif key.startswith("lat:"):
                    bound = int(key.split(":", 1)[1])
                    total.latency_buckets[bound] = total.latency_buckets.get(bound, 0) + int(value)
        return total

    def count_pipeline(self, **fields: int) -> None:
        """Add pipeline-wide counters (dead-lettered batches, dropped lines) to this minute."""
        minute = int(self.clock() // 60)
        key = f"pipeline:{minute}"
        try:
            self.store.add({key: {k: v for k, v in fields.items() if v}}, {key: COUNTER_TTL_S})
        except (redis.RedisError, OSError) as exc:
            self._failed("record pipeline counters", exc)

    def pipeline_counts(self, minutes: int = 60) -> dict[str, int]:
        current = int(self.clock() // 60)
        keys = [f"pipeline:{m}" for m in range(current - minutes + 1, current + 1)]
        try:
            tables = self.store.get_counters(keys)
        except (redis.RedisError, OSError) as exc:
            self._failed("read pipeline counters", exc)
            return {}
        total: dict[str, int] = {}
        for table in tables:
            for key, value in table.items():
                total[key] = total.get(key, 0) + int(value)
        return total

    def usage_today(self, name: str) -> dict[str, int]:
        try:
            table = self.store.get_counters([f"usage:{name}:{utc_day(self.clock())}"])[0]
        except (redis.RedisError, OSError) as exc:
            self._failed("read usage", exc)
            table = {}
        return {"messages": int(table.get("messages", 0)), "requests": int(table.get("requests", 0))}

    # Per-minute series (the viewer's chart) -----------------------------------------------

    def sent_per_minute(self, name: str, minutes: int = 60) -> list[int]:
        """Messages ``name`` sent in each of the last ``minutes`` minute buckets, oldest first
        (the current, unfinished minute last); zeros when the store is unreachable."""
        current = int(self.clock() // 60)
        keys = [f"stats:{name}:{m}" for m in range(current - minutes + 1, current + 1)]
        try:
            tables = self.store.get_counters(keys)
        except (redis.RedisError, OSError) as exc:
            self._failed("read per-minute counters", exc)
            return [0] * minutes
        return [int(table.get("sent", 0)) for table in tables]


def counts_from_send(latencies_ms: Sequence[float], sent: int, failed: Mapping[str, int],
                     skipped: int = 0) -> Counts:
    buckets: dict[int, int] = {}
    for latency in latencies_ms:
        bound = _bucket(latency)
        buckets[bound] = buckets.get(bound, 0) + 1
    return Counts(sent=sent, requests=len(latencies_ms), skipped=skipped,
                  failed={c: n for c, n in failed.items() if n and c in CATEGORIES},
                  latency_buckets=buckets, latency_sum_ms=sum(latencies_ms))


def state_from_url(redis_url: str | None, prefix: str) -> SharedState:
    """Redis-backed state when a URL is given, in-memory otherwise."""
    return SharedState(RedisStore.from_url(redis_url, prefix) if redis_url else MemoryStore())
