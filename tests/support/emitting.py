"""Helpers for the emitter's tests: a recording ``enqueue`` and a database that is late."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcasters.wire import Batch
from workflows import process
from workflows.emitter import Emitter
from workflows.models import LogLine
from workflows.store import LogStore

#: A flush interval long enough that the flusher only runs when the test calls flush().
HELD = 60_000
STOP_TIMEOUT_S = 0.5

MakeEmitter = Callable[..., Emitter]


class Recorder:
    """``enqueue``: records each batch; raises ConnectionError while ``down`` (broker outage).

    The boundary to Celery (covered end to end by the pipeline tests): here every batch is
    kept as a JSON task would carry it.
    """

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.down = False
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, batch: Batch) -> None:
        with self._lock:
            if self.down:
                self.refused += 1
                raise ConnectionError("broker unreachable")
            self.batches.append(json.loads(json.dumps(batch)))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(event) for batch in self.batches for run in batch["runs"]
                if run["run_id"] == run_id for event in run["events"]]

    def seqs(self, run_id: str) -> list[int]:
        return [event["seq"] for event in self.events(run_id)]

    def admin(self) -> list[dict[str, Any]]:
        return [dict(message) for batch in self.batches for message in batch["admin"]]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` (progress of the flusher thread); no assertion on how long it took."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def seqs(store: LogStore, run_id: str) -> list[int]:
    return [line.seq for line in store.lines(run_id)]


def messages(lines: list[LogLine]) -> list[str]:
    return [line.message for line in lines]


@dataclass
class LateDatabase:
    """A real database that cannot be opened until ``make_available()``."""

    url: str
    make_available: Callable[[], None]
    opened: list[LogStore] = field(default_factory=list)

    def store(self) -> LogStore:
        """The emitter's store factory: opens (and migrates) the database, or raises."""
        log_store = LogStore.from_url(self.url)
        self.opened.append(log_store)
        return log_store


def late_sqlite(tmp_path: Path) -> LateDatabase:
    """A SQLite database whose folder is a plain file until made available."""
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    return LateDatabase(f"sqlite:///{blocker / 'relaycast.db'}", blocker.unlink)


@contextmanager
def installed_as_the_process_emitter(emitter: Emitter) -> Iterator[Emitter]:
    """``emitter`` as this process's own (``workflows.process.configure``) for the block; the
    previous factory comes back, and the emitter is stopped, afterwards."""
    previous = process._factory
    process.reset_emitter()
    process.configure(lambda: emitter)
    try:
        assert process.get_emitter() is emitter
        yield emitter
    finally:
        process.reset_emitter()  # stops it
        process._factory = previous
