"""Storage primitives for the shared state, apart from the policy that uses them.

After dramatiq's rate-limit ``backend`` / ``window`` split: a backend offers a few
primitives (get many, set with TTL, swap, delete, add to counters, read and write hashes,
keep the larger of two numbers, advance observed states) and knows nothing of flags or
quotas. Two backends ship:

* :class:`RedisBackend`, for real deployments: every worker of every host sees the same
  state; one round trip per call (pipelines, one Lua script);
* :class:`MemoryBackend`, the same interface in one process's memory: the embedded default
  and single-process use.

Keys are given without the prefix; each backend adds its own. Every write carries a TTL,
so the state heals by itself. A backend that cannot reach its server raises
:class:`StateUnavailable` (and nothing else), so the policy above it never needs to know
which client library a backend uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import redis

from broadcasters.keys import DEFAULT_PREFIX

T = TypeVar("T")


class StateUnavailable(Exception):
    """The shared state's server could not be reached (or answered with an error)."""


class StateBackend(Protocol):
    """Primitives a shared-state backend offers; keys are given without the prefix."""

    name: str

    def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    def set(self, key: str, value: str, ttl_s: float) -> None: ...

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        """Set ``key`` and return its previous value, atomically."""

    def delete(self, keys: Sequence[str]) -> None: ...

    def add(self, counters: Mapping[str, Mapping[str, float]], ttl_s: Mapping[str, float]) -> None:
        """Add to hash fields: ``counters[key][field] += n``; (re)set each key's TTL."""

    def hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """Every field of each hash (an empty dict for a missing key)."""

    def get_fields(self, key: str, fields: Sequence[str]) -> list[str | None]:
        """Some fields of one hash (None for each missing one)."""

    def set_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        """Set hash fields and (re)set the key's TTL."""

    def replace_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        """Make the hash hold exactly ``fields``, atomically."""

    def set_max_many(self, values: Mapping[str, int], ttl_s: float) -> dict[str, int]:
        """For each key, keep the larger of the stored number and the value given; return the
        results. One round trip; each key atomic."""

    def advance_many(self, values: Mapping[str, str], stamp: float, ttl_s: float
                     ) -> dict[str, str | None]:
        """Record ``values`` as each key's state observed at ``stamp`` (epoch seconds), unless
        the key holds an observation as new or newer; return, for each key whose state this
        call changed, the state it held before (None: none). One round trip, atomic: of several
        callers observing one change, exactly one is told about it."""

    def close(self) -> None: ...


#: A stored observation: ``{stamp}|{state}``.
STAMP_SEPARATOR = "|"

_ADVANCE = """
local stamp = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 2]
  local stored = redis.call('GET', key)
  local previous = nil
  local older = false
  if stored then
    local sep = string.find(stored, '|', 1, true)
    if sep then
      previous = string.sub(stored, sep + 1)
      older = (tonumber(string.sub(stored, 1, sep - 1)) or 0) >= stamp
    end
  end
  if older then
    out[i] = '='
  else
    redis.call('SET', key, ARGV[1] .. '|' .. value, 'PX', ARGV[2])
    if previous == value then
      out[i] = '='
    elseif previous == nil then
      out[i] = '+'
    else
      out[i] = '>' .. previous
    end
  end
end
return out
"""


def _advanced(keys: Sequence[str], answers: Sequence[Any]) -> dict[str, str | None]:
    """The Lua script's answers (``=`` unchanged, ``+`` new, ``>{previous}`` changed)."""
    changed: dict[str, str | None] = {}
    for key, raw in zip(keys, answers, strict=True):
        answer = _text(raw)
        if answer == "+":
            changed[key] = None
        elif answer.startswith(">"):
            changed[key] = answer[1:]
    return changed


def _stored_state(raw: str | None) -> tuple[float, str] | None:
    if raw is None or STAMP_SEPARATOR not in raw:
        return None
    stamp, _, state = raw.partition(STAMP_SEPARATOR)
    try:
        return float(stamp), state
    except ValueError:
        return None


_SET_MAX = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local value = tonumber(ARGV[1])
if value > current then current = value end
redis.call('SET', KEYS[1], current, 'PX', ARGV[2])
return current
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ttl_ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class RedisBackend:
    """The primitives on Redis, under ``prefix``."""

    name = "redis"

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._set_max = client.register_script(_SET_MAX)
        self._advance = client.register_script(_ADVANCE)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, timeout_s: float = 0.5
                 ) -> RedisBackend:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            decode_responses=True, health_check_interval=30,
        )
        return cls(client, prefix)

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.RedisError, OSError) as exc:
            raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values = self._call(lambda: self.client.mget([self._k(k) for k in keys]))
        return [None if v is None else _text(v) for v in values]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        self._call(lambda: self.client.set(self._k(key), value, px=_ttl_ms(ttl_s)))

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        previous: Any = self._call(
            lambda: self.client.set(self._k(key), value, px=_ttl_ms(ttl_s), get=True))
        return None if previous is None else _text(previous)

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._call(lambda: self.client.delete(*(self._k(k) for k in keys)))

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
        self._call(pipe.execute)

    def hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self._k(key))
        return [{_text(k): _text(v) for k, v in raw.items()} for raw in self._call(pipe.execute)]

    def get_fields(self, key: str, fields: Sequence[str]) -> list[str | None]:
        if not fields:
            return []
        values = self._call(lambda: self.client.hmget(self._k(key), list(fields)))
        return [None if v is None else _text(v) for v in values]

    def set_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        if not fields:
            return
        mapping: dict[Any, Any] = dict(fields)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._k(key), mapping=mapping)
        pipe.pexpire(self._k(key), _ttl_ms(ttl_s))
        self._call(pipe.execute)

    def replace_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        mapping: dict[Any, Any] = dict(fields)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._k(key))
        if mapping:
            pipe.hset(self._k(key), mapping=mapping)
            pipe.pexpire(self._k(key), _ttl_ms(ttl_s))
        self._call(pipe.execute)

    def set_max_many(self, values: Mapping[str, int], ttl_s: float) -> dict[str, int]:
        if not values:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for key, value in values.items():
            self._set_max(keys=[self._k(key)], args=[value, _ttl_ms(ttl_s)], client=pipe)
        results = self._call(pipe.execute)
        return {key: int(result) for key, result in zip(values, results, strict=True)}

    def advance_many(self, values: Mapping[str, str], stamp: float, ttl_s: float
                     ) -> dict[str, str | None]:
        if not values:
            return {}
        keys = list(values)
        answers = self._call(lambda: self._advance(
            keys=[self._k(k) for k in keys],
            args=[repr(float(stamp)), _ttl_ms(ttl_s), *(values[k] for k in keys)]))
        return _advanced(keys, answers)

    def close(self) -> None:
        self.client.close()


class MemoryBackend:
    """The same primitives in one process's memory (thread-safe, TTLs honoured)."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._values: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _live(self, key: str) -> Any:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._values[key]
            return None
        return entry[0]

    def _put(self, key: str, value: Any, ttl_s: float) -> None:
        self._values[key] = (value, self._clock() + ttl_s)

    def _table(self, key: str) -> dict[str, Any]:
        current = self._live(key)
        return dict(current) if isinstance(current, dict) else {}

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        with self._lock:
            values = [self._live(k) for k in keys]
            return [v if isinstance(v, str) else None for v in values]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            self._put(key, value, ttl_s)

    def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        with self._lock:
            previous = self._live(key)
            self._put(key, value, ttl_s)
            return previous if isinstance(previous, str) else None

    def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def add(self, counters: Mapping[str, Mapping[str, float]], ttl_s: Mapping[str, float]) -> None:
        with self._lock:
            for key, fields in counters.items():
                table = self._table(key)
                for name, amount in fields.items():
                    table[name] = table.get(name, 0) + amount
                self._put(key, table, ttl_s[key])

    def hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        with self._lock:
            return [{k: _text(v) for k, v in self._table(key).items()} for key in keys]

    def get_fields(self, key: str, fields: Sequence[str]) -> list[str | None]:
        with self._lock:
            table = self._table(key)
            return [None if f not in table else _text(table[f]) for f in fields]

    def set_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        if not fields:
            return
        with self._lock:
            self._put(key, {**self._table(key), **fields}, ttl_s)

    def replace_fields(self, key: str, fields: Mapping[str, str], ttl_s: float) -> None:
        with self._lock:
            if fields:
                self._put(key, dict(fields), ttl_s)
            else:
                self._values.pop(key, None)

    def set_max_many(self, values: Mapping[str, int], ttl_s: float) -> dict[str, int]:
        out = {}
        with self._lock:
            for key, value in values.items():
                current = self._live(key)
                out[key] = max(value, int(current) if isinstance(current, str) else -1)
                self._put(key, str(out[key]), ttl_s)
        return out

    def advance_many(self, values: Mapping[str, str], stamp: float, ttl_s: float
                     ) -> dict[str, str | None]:
        changed: dict[str, str | None] = {}
        with self._lock:
            for key, value in values.items():
                current = self._live(key)
                stored = _stored_state(current if isinstance(current, str) else None)
                if stored is not None and stored[0] >= stamp:
                    continue
                self._put(key, f"{float(stamp)!r}{STAMP_SEPARATOR}{value}", ttl_s)
                if stored is None:
                    changed[key] = None
                elif stored[1] != value:
                    changed[key] = stored[1]
        return changed

    def close(self) -> None:
        """Nothing to release."""


def backend_from_url(redis_url: str | None, prefix: str) -> StateBackend:
    """Redis when a URL is given, this process's memory otherwise."""
    return RedisBackend.from_url(redis_url, prefix) if redis_url else MemoryBackend()
