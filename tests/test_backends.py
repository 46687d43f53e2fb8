"""The shared-state backends: the same primitives on Redis and in memory."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from support.servers import RedisServer

from broadcasters.backends import MemoryBackend, RedisBackend, StateBackend, StateUnavailable


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[StateBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_backend = RedisBackend.from_url(server.url, prefix=f"b-{uuid.uuid4().hex[:8]}:")
    yield redis_backend
    redis_backend.delete(redis_backend.scan("*"))
    redis_backend.close()


def test_values_expire_after_their_ttl(backend: StateBackend) -> None:
    backend.set("a", "1", ttl_s=0.2)
    backend.set_fields("h", {"x": "1"}, ttl_s=0.2)
    assert backend.get_many(["a", "missing"]) == ["1", None]
    time.sleep(0.35)
    assert backend.get_many(["a"]) == [None]
    assert backend.hashes(["h"]) == [{}]


def test_swap_returns_the_previous_value(backend: StateBackend) -> None:
    assert backend.swap("active", "pusher", 60) is None
    assert backend.swap("active", "log", 60) == "pusher"
    assert backend.get_many(["active"]) == ["log"]


def test_counters_add_and_fields_set_replace_and_delete(backend: StateBackend) -> None:
    backend.add({"c": {"n": 2, "f": 0.5}}, {"c": 60})
    backend.add({"c": {"n": 3}}, {"c": 60})
    assert {k: float(v) for k, v in backend.hashes(["c"])[0].items()} == {"n": 5.0, "f": 0.5}
    backend.set_fields("h", {"a": "1", "b": "2"}, 60)
    backend.set_fields("h", {"b": "3"}, 60)
    assert backend.hashes(["h"]) == [{"a": "1", "b": "3"}]
    backend.replace_fields("h", {"z": "9"}, 60)
    assert backend.hashes(["h"]) == [{"z": "9"}]
    backend.delete_fields("h", ["z"])
    assert backend.hashes(["h"]) == [{}]


def test_set_max_keeps_the_larger_number_under_concurrent_writers(backend: StateBackend) -> None:
    assert backend.set_max("gate", 5, 60) == 5
    assert backend.set_max("gate", 3, 60) == 5, "never moves back"
    values = list(range(1, 201))

    def writer(part: list[int]) -> None:
        for value in part:
            backend.set_max("gate", value, 60)

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


def test_scan_finds_keys_by_pattern(backend: StateBackend) -> None:
    backend.set("gate:run-1", "1", 60)
    backend.set("gate:run-2", "1", 60)
    backend.set("other", "1", 60)
    assert sorted(backend.scan("gate:*")) == ["gate:run-1", "gate:run-2"]


def test_an_unreachable_redis_raises_state_unavailable_only() -> None:
    backend = RedisBackend.from_url("redis://127.0.0.1:1/0", timeout_s=0.2)
    for call in (lambda: backend.get_many(["a"]), lambda: backend.set("a", "1", 1),
                 lambda: backend.set_max("g", 1, 1), lambda: backend.set_max_many({"g": 1}, 1),
                 lambda: backend.hashes(["h"]),
                 lambda: backend.add({"c": {"n": 1}}, {"c": 1})):
        with pytest.raises(StateUnavailable):
            call()
