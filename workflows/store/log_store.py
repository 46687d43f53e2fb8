"""The store: one object with every part (lines, the delivery ledger, runs, health history,
the viewer's queries) on one engine, and one per process and URL (:func:`store_for`)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from workflows.forks import on_fork
from workflows.store.engine import current_revision, head_revision, make_engine, upgrade
from workflows.store.health import Health
from workflows.store.ledger import Ledger
from workflows.store.lines import Lines
from workflows.store.runs import Runs
from workflows.store.viewer import Viewer


class LogStore(Lines, Ledger, Runs, Health, Viewer):
    """Lines and runs in SQL. Thread-safe; one per process (see :func:`store_for`)."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        if migrate and current_revision(engine) != head_revision():
            upgrade(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        #: Lines renumbered after a conflict with lines already stored (never silent).
        self.renumbered = 0

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> LogStore:
        return cls(make_engine(url), migrate=migrate)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


_stores: dict[str, LogStore] = {}
_stores_lock = threading.Lock()
#: A forked child's inherited stores: kept, never used or closed (their pooled connections
#: are the parent's; closing them here would close them under the parent).
_inherited: list[LogStore] = []


@on_fork
def _forget_after_fork() -> None:
    global _stores_lock
    _stores_lock = threading.Lock()
    _inherited.extend(_stores.values())
    _stores.clear()


def store_for(url: str) -> LogStore:
    """This process's store for ``url`` (a new engine after a fork)."""
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = LogStore.from_url(url)
        return store
