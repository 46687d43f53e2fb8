"""The shared-state backends: the same primitives on Redis and in memory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from support.clock import FakeClock
from support.emitting import wait_until
from support.redis_keys import delete_prefixed
from support.servers import RedisServer

from broadcasters.backends import MemoryBackend, RedisBackend, StateBackend, StateUnavailable


@pytest.fixture
def redis_backend(redis_server: RedisServer) -> Iterator[RedisBackend]:
    backend = RedisBackend.from_url(redis_server.url, prefix=f"b-{uuid.uuid4().hex[:8]}:")
    yield backend
    delete_prefixed(backend)
    backend.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> StateBackend:
    if request.param == "memory":
        return MemoryBackend()
    redis_backend: RedisBackend = request.getfixturevalue("redis_backend")
    return redis_backend


def test_values_expire_after_their_ttl_in_memory() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    backend.set("a", "1", ttl_s=10)
    backend.set_fields("h", {"x": "1"}, ttl_s=10)
    clock.advance(9.5)
    assert backend.get_many(["a", "missing"]) == ["1", None]
    assert backend.hashes(["h"]) == [{"x": "1"}]
    clock.advance(0.5)
    assert backend.get_many(["a"]) == [None]
    assert backend.hashes(["h"]) == [{}]


def test_values_expire_after_their_ttl_on_redis(redis_backend: RedisBackend) -> None:
    redis_backend.set("a", "1", ttl_s=0.2)
    redis_backend.set_fields("h", {"x": "1"}, ttl_s=0.2)
    ttls_ms = [redis_backend.client.pttl(redis_backend.prefix + key) for key in ("a", "h")]
    assert all(0 < ttl <= 200 for ttl in ttls_ms), ttls_ms
    assert wait_until(lambda: redis_backend.get_many(["a"]) == [None]
                      and redis_backend.hashes(["h"]) == [{}]), "Redis expired them"


def test_swap_returns_the_previous_value(backend: StateBackend) -> None:
    assert backend.swap("active", "pusher", 60) is None
    assert backend.swap("active", "log", 60) == "pusher"
    assert backend.get_many(["active"]) == ["log"]


def test_counters_add_and_fields_set_and_replace(backend: StateBackend) -> None:
    backend.add({"c": {"n": 2, "f": 0.5}}, {"c": 60})
    backend.add({"c": {"n": 3}}, {"c": 60})
    assert {k: float(v) for k, v in backend.hashes(["c"])[0].items()} == {"n": 5.0, "f": 0.5}
    backend.set_fields("h", {"a": "1", "b": "2"}, 60)
    backend.set_fields("h", {"b": "3"}, 60)
    assert backend.hashes(["h"]) == [{"a": "1", "b": "3"}]
    assert backend.get_fields("h", ["b", "missing"]) == ["3", None]
    backend.replace_fields("h", {"z": "9"}, 60)
    assert backend.hashes(["h"]) == [{"z": "9"}]
    backend.replace_fields("h", {}, 60)
    assert backend.hashes(["h"]) == [{}]


def test_set_max_keeps_the_larger_number_under_concurrent_writers(backend: StateBackend) -> None:
    assert backend.set_max_many({"gate": 5}, 60) == {"gate": 5}
    assert backend.set_max_many({"gate": 3}, 60) == {"gate": 5}, "never moves back"
    values = list(range(1, 201))

    def writer(part: list[int]) -> None:
        for value in part:
            backend.set_max_many({"gate": value}, 60)

    threads = [threading.Thread(target=writer, args=(values[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.get_many(["gate"]) == ["200"]


def test_set_max_many_moves_several_keys_each_only_forward(backend: StateBackend) -> None:
    assert backend.set_max_many({"gate:a": 10, "gate:b": 3}, 60) == {"gate:a": 10, "gate:b": 3}
    assert backend.set_max_many({"gate:a": 4, "gate:b": 7, "gate:c": 1}, 60) == {
        "gate:a": 10, "gate:b": 7, "gate:c": 1}, "each key keeps its larger number"
    assert backend.get_many(["gate:a", "gate:b", "gate:c"]) == ["10", "7", "1"]
    assert backend.set_max_many({}, 60) == {}


def test_an_unreachable_redis_raises_state_unavailable_only() -> None:
    backend = RedisBackend.from_url("redis://127.0.0.1:1/0", timeout_s=0.2)
    for call in (lambda: backend.get_many(["a"]), lambda: backend.set("a", "1", 1),
                 lambda: backend.set_max_many({"g": 1}, 1),
                 lambda: backend.hashes(["h"]),
                 lambda: backend.add({"c": {"n": 1}}, {"c": 1})):
        with pytest.raises(StateUnavailable):
            call()
