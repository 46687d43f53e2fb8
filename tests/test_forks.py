"""The after-fork registry: a child forked by ``os.fork()`` (as billiard's prefork pool forks)
starts with fresh objects, and the parent keeps its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.forking import in_forked_child

from tasks import runtime
from workflows import forks
from workflows.store import store_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")


@pytest.fixture
def worker_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A worker's runtime on the embedded defaults (SQLite, state in memory, ``log``)."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    runtime.reset()
    yield sqlite_url
    runtime.reset()
    store_for(sqlite_url).close()


def test_a_forked_child_builds_its_own_runtime_objects_and_store(worker_env: str) -> None:
    manager, gate, store = runtime.manager(), runtime.gate(), store_for(worker_env)

    child = in_forked_child(lambda: {
        "manager": runtime.manager() is manager,
        "state": runtime.state() is manager.state,
        "gate": runtime.gate() is gate,
        "store": store_for(worker_env) is store,
    })

    assert child == {"manager": False, "state": False, "gate": False, "store": False}
    assert (runtime.manager(), runtime.gate(), store_for(worker_env)) == (manager, gate, store), \
        "the parent keeps its own"


def test_every_callback_registered_runs_in_the_child_in_order_even_after_one_fails() -> None:
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("a callback that fails")

    callbacks = [lambda: ran.append("first"), broken, lambda: ran.append("last")]
    for callback in callbacks:
        forks.on_fork(callback)
    try:
        child = in_forked_child(lambda: {"ran": ran})
    finally:
        for callback in callbacks:
            forks._callbacks.remove(callback)

    assert child["ran"] == ["first", "broken", "last"]
    assert ran == [], "nothing runs in the parent"
