"""The emitter, LogStream and admin events over a real LogStore (SQLite and PostgreSQL).

``enqueue`` is the boundary to Celery (covered end to end elsewhere): here it is a
:class:`Recorder` that keeps every batch and can fail like a broker that is down.
Flush intervals are short; where a test needs the flusher to stay idle it uses
``HELD`` (a 60 s interval and no threshold reached), so the only flushes are the ones
the test asks for with ``emitter.flush()``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import workflows.emitter as emitter_module
from workflows import admin_events
from workflows.emitter import Batch, Emitter, clean_data, configure, get_emitter, reset_emitter
from workflows.log_stream import (
    RUN_ID_CHARS,
    InvalidRunId,
    LogStream,
    LogStreamHandler,
    validate_run_id,
)
from workflows.models import LogLine
from workflows.store import LogStore, store_for

#: A flush interval long enough that the flusher only runs when the test calls flush().
HELD = 60_000
STOP_TIMEOUT_S = 0.5


# Helpers ---------------------------------------------------------------------------------------


class Recorder:
    """``enqueue``: records each batch; raises ConnectionError while ``down`` (broker outage)."""

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
            self.batches.append(json.loads(json.dumps(batch)))  # what a JSON task would carry

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [event for batch in self.batches for run in batch["runs"] if run["run_id"] == run_id
                for event in run["events"]]

    def seqs(self, run_id: str) -> list[int]:
        return [event["seq"] for event in self.events(run_id)]

    def admin(self) -> list[dict[str, Any]]:
        return [message for batch in self.batches for message in batch["admin"]]


MakeEmitter = Callable[..., Emitter]


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` (progress of the flusher thread); no assertion on how long it took."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _seqs(store: LogStore, run_id: str) -> list[int]:
    return [line.seq for line in store.lines(run_id)]


def _messages(lines: list[LogLine]) -> list[str]:
    return [line.message for line in lines]


@pytest.fixture
def emitters() -> Iterator[MakeEmitter]:
    """Build emitters (flush interval 10 ms unless given); every one is stopped afterwards.

    Request it after the store fixture so emitters stop before their database goes away.
    """
    made: list[Emitter] = []

    def make(store: Callable[[], LogStore], enqueue: Callable[[Batch], None], **options: Any
             ) -> Emitter:
        options.setdefault("flush_interval_ms", 10)
        emitter = Emitter(store=store, enqueue=enqueue, **options)
        made.append(emitter)
        return emitter

    try:
        yield make
    finally:
        for emitter in made:
            emitter.stop(timeout_s=STOP_TIMEOUT_S)


# Numbering and storage -------------------------------------------------------------------------


def test_interleaved_runs_get_contiguous_seqs_and_are_stored_in_full(
        store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder)
    levels = ("debug", "info", "warning", "error")
    expected: dict[str, list[tuple[str, str, dict[str, Any]]]] = {"etl-a": [], "etl-b": [], "etl-c": []}
    for i in range(60):
        run_id = ("etl-a", "etl-b", "etl-c")[i % 3 if i % 7 else 0]
        level = levels[i % 4]
        data = {"i": i, "nested": {"values": [i, str(i), None], "ok": i % 2 == 0}, "text": "héllo ✓"}
        emitter.emit(run_id, level, f"{run_id} line {i}", data)
        expected[run_id].append((level, f"{run_id} line {i}", data))

    assert emitter.flush(10) is True
    for run_id, lines in expected.items():
        stored = store.lines(run_id)
        assert [line.seq for line in stored] == list(range(1, len(lines) + 1))
        assert [(line.level, line.message, line.data) for line in stored] == lines
        assert all(isinstance(line.ts, int) and line.ts > 1_600_000_000_000 for line in stored)
        assert recorder.seqs(run_id) == list(range(1, len(lines) + 1))
    assert (emitter.stats.emitted, emitter.stats.stored, emitter.stats.dropped) == (60, 60, 0)


def test_a_run_already_in_sql_continues_after_its_last_seq(store: LogStore, emitters: MakeEmitter
                                                           ) -> None:
    first = Emitter(store=lambda: store, enqueue=Recorder(), flush_interval_ms=10)
    try:
        for i in range(1, 6):
            first.emit("etl-1", "info", f"first process {i}", {})
    finally:
        first.stop(timeout_s=10)
    assert _seqs(store, "etl-1") == [1, 2, 3, 4, 5]

    # A retried workflow in another process: a new emitter over the same database.
    recorder = Recorder()
    second = emitters(lambda: store, recorder)
    for i in range(1, 4):
        second.emit("etl-1", "info", f"second process {i}", {})
    second.emit("etl-2", "info", "a new run starts at 1", {})
    assert second.flush(10)
    lines = store.lines("etl-1")
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _messages(lines)[5:] == ["second process 1", "second process 2", "second process 3"]
    assert recorder.seqs("etl-1") == [6, 7, 8]
    assert recorder.seqs("etl-2") == [1]


def test_one_flush_enqueues_one_task_carrying_every_line_and_admin_event(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder, flush_interval_ms=HELD)
    runs = ("etl-1", "etl-2", "etl-3")
    for i in range(500):
        emitter.emit(runs[i % 3], "info", f"line {i}", {"i": i})
    emitter.emit_admin("deploy", {"version": "1.4.2"})
    assert emitter.flush(10)

    assert len(recorder.batches) == 1, "one broadcast task per flush, not one per line"
    batch = recorder.batches[0]
    assert set(batch) == {"runs", "admin"}
    assert [run["run_id"] for run in batch["runs"]] == list(runs)
    for run in batch["runs"]:
        assert set(run) == {"run_id", "channel", "events"}
        assert run["channel"] == f"private-logs-{run['run_id']}"
        assert all(set(event) == {"seq", "ts", "level", "message", "data"} for event in run["events"])
    assert sum(len(run["events"]) for run in batch["runs"]) == 500
    assert recorder.events("etl-2")[0] == {"seq": 1, "ts": recorder.events("etl-2")[0]["ts"],
                                           "level": "info", "message": "line 1", "data": {"i": 1}}
    assert recorder.seqs("etl-1") == list(range(1, 168))
    assert [message["event"] for message in batch["admin"]] == ["deploy"]
    assert emitter.stats.tasks_enqueued == 1


@pytest.mark.parametrize("prefix", ["private-", "", "presence-tenant_1."])
def test_channels_are_the_prefix_then_logs_then_the_run_id(
        sqlite_store: LogStore, emitters: MakeEmitter, prefix: str) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder, channel_prefix=prefix)
    log = LogStream("etl-2024.01.01", emitter=emitter)
    assert log.channel == f"{prefix}logs-etl-2024.01.01"
    log.info("hello")
    emitter.emit_admin("deploy", {})
    assert emitter.flush(10)
    assert [run["channel"] for batch in recorder.batches for run in batch["runs"]] == [log.channel]
    assert [message["channel"] for message in recorder.admin()] == [f"{prefix}admin-events"]


def test_a_flush_bigger_than_max_batch_lines_is_cut_into_tasks_in_order(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder, flush_interval_ms=HELD, max_batch_lines=100)
    for i in range(250):
        emitter.emit("etl-1", "info", f"line {i}", {})
    for i in range(30):
        emitter.emit("etl-2", "info", f"line {i}", {})
    assert emitter.flush(10)
    sizes = [sum(len(run["events"]) for run in batch["runs"]) for batch in recorder.batches]
    assert sizes == [100, 100, 80], "etl-1's last 50 lines and etl-2's 30 share a task"
    assert recorder.seqs("etl-1") == list(range(1, 251))
    assert recorder.seqs("etl-2") == list(range(1, 31))


# A full buffer -------------------------------------------------------------------------------


def test_a_full_buffer_drops_debug_lines_first_and_counts_them(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder(), flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(200):
        emitter.emit("etl-1", "debug" if i % 2 == 0 else "info", f"line {i}", {"i": i})

    assert emitter.stats.dropped == 100
    assert emitter.stats.dropped_by_run == {"etl-1": 100}
    assert emitter.flush(10)

    lines = sqlite_store.lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 102)), "no gap in the numbering"
    warning = lines[0]
    assert (warning.level, warning.data) == ("warning", {"dropped": 100})
    assert "100 line(s)" in warning.message and "dropped" in warning.message
    kept = lines[1:]
    assert {line.level for line in kept} == {"info"}, "every DEBUG line went before any other"
    assert _messages(kept) == [f"line {i}" for i in range(1, 200, 2)]


def test_the_flush_after_a_full_buffer_is_still_broadcast(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder, flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(150):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.stats.dropped == 50
    assert emitter.flush(10)
    assert _seqs(sqlite_store, "etl-1") == list(range(1, 102))
    assert recorder.seqs("etl-1") == list(range(1, 102)), "the broker is up: all of it goes out"
    assert (emitter.stats.dropped, emitter.stats.not_broadcast) == (50, 0)


def test_without_debug_lines_the_oldest_lines_are_dropped_and_counted_per_run(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder(), flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(150):
        emitter.emit(("etl-a", "etl-b")[i % 2], "warning" if i % 3 else "info", f"line {i}", {})

    assert emitter.stats.dropped == 50
    assert emitter.stats.dropped_by_run == {"etl-a": 25, "etl-b": 25}
    assert emitter.flush(10)
    for run_id, first in (("etl-a", 50), ("etl-b", 51)):
        lines = sqlite_store.lines(run_id)
        assert [line.seq for line in lines] == list(range(1, 52))
        assert (lines[0].level, lines[0].data) == ("warning", {"dropped": 25})
        assert "25 line(s)" in lines[0].message
        assert _messages(lines[1:]) == [f"line {i}" for i in range(first, 150, 2)], "newest kept"


def test_a_busy_flusher_does_not_let_the_buffer_grow_past_its_bound(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    """The flusher is stuck opening the store (slow SQL) while the workflow keeps emitting."""
    entered, release = threading.Event(), threading.Event()

    def slow_store() -> LogStore:
        entered.set()
        release.wait(10)
        return sqlite_store

    recorder = Recorder()
    emitter = emitters(slow_store, recorder, max_buffer_lines=100)
    try:
        emitter.emit("etl-1", "info", "first", {})
        assert entered.wait(10), "the flusher picked up the first line"
        for i in range(300):
            emitter.emit("etl-1", "debug" if i < 200 else "info", f"line {i}", {})
        assert emitter.stats.dropped == 200
        assert emitter.stats.dropped_by_run == {"etl-1": 200}
    finally:
        release.set()
    assert emitter.flush(10)

    lines = sqlite_store.lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 103))
    warnings = [line for line in lines if line.message.startswith("relaycast:")]
    assert [(line.level, line.data) for line in warnings] == [("warning", {"dropped": 200})]
    others = [line.message for line in lines if line not in warnings]
    assert others == ["first"] + [f"line {i}" for i in range(200, 300)]


# SQL unavailable -------------------------------------------------------------------------------


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


def _late_sqlite(tmp_path: Path) -> LateDatabase:
    """A SQLite database whose folder is a plain file until made available."""
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    return LateDatabase(f"sqlite:///{blocker / 'relaycast.db'}", blocker.unlink)


@pytest.fixture
def late_database(database_url: str, tmp_path: Path) -> Iterator[LateDatabase]:
    """SQLite: the database's folder is a plain file until made available. PostgreSQL: the
    database does not exist until made available (then it is created, empty)."""
    if make_url(database_url).get_backend_name() == "sqlite":
        late = _late_sqlite(tmp_path)
        yield late
        for log_store in late.opened:
            log_store.engine.dispose()
        return

    parsed = make_url(database_url)
    name = f"{parsed.database}_late"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def create() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))

    late = LateDatabase(parsed.set(database=name).render_as_string(hide_password=False), create)
    try:
        yield late
    finally:
        for log_store in late.opened:
            log_store.engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_while_sql_is_unavailable_lines_wait_and_are_all_stored_when_it_returns(
        late_database: LateDatabase, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(late_database.store, recorder)
    for i in range(10):
        emitter.emit("etl-a", "info", f"a {i}", {"i": i})
        emitter.emit("etl-b", "debug", f"b {i}", {"i": i})

    assert emitter.flush(0.3) is False, "nothing can be stored yet"
    assert _wait_until(lambda: emitter.stats.store_failures >= 1)
    assert (emitter.stats.stored, emitter.stats.dropped, recorder.batches) == (0, 0, [])
    for i in range(10, 15):
        emitter.emit("etl-a", "info", f"a {i}", {"i": i})
        emitter.emit("etl-b", "debug", f"b {i}", {"i": i})

    late_database.make_available()
    assert emitter.flush(15) is True
    store = late_database.opened[-1]
    for run_id, prefix in (("etl-a", "a"), ("etl-b", "b")):
        lines = store.lines(run_id)
        assert [line.seq for line in lines] == list(range(1, 16))
        assert _messages(lines) == [f"{prefix} {i}" for i in range(15)]
        assert [line.data for line in lines] == [{"i": i} for i in range(15)]
        assert recorder.seqs(run_id) == list(range(1, 16))
    assert emitter.stats.stored == 30


def test_lines_waiting_for_sql_are_bounded_and_the_drops_are_reported_when_it_returns(
        late_database: LateDatabase, emitters: MakeEmitter) -> None:
    emitter = emitters(late_database.store, Recorder(), max_buffer_lines=100)
    for i in range(50):
        emitter.emit("etl-1", "info", f"info {i}", {})
    assert emitter.flush(0.2) is False
    for i in range(100):
        emitter.emit("etl-1", "debug", f"debug {i}", {})
    assert _wait_until(lambda: emitter.stats.dropped == 50)
    assert emitter.stats.dropped_by_run == {"etl-1": 50}

    late_database.make_available()
    assert emitter.flush(15)
    lines = late_database.opened[-1].lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 102))
    assert (lines[0].level, lines[0].data) == ("warning", {"dropped": 50})
    assert _messages(lines[1:]) == ([f"info {i}" for i in range(50)]
                                    + [f"debug {i}" for i in range(50, 100)])


def test_an_sql_outage_is_logged_with_the_number_of_waiting_lines(
        tmp_path: Path, emitters: MakeEmitter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="workflows.emitter")
    emitter = emitters(_late_sqlite(tmp_path).store, Recorder(), flush_interval_ms=HELD)
    for i in range(5):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.flush(0.2) is False
    assert _wait_until(lambda: emitter.stats.store_failures >= 1)
    messages = [record.getMessage() for record in caplog.records
                if record.name == "workflows.emitter" and record.levelno == logging.WARNING]
    assert any("SQL unavailable" in message and "5 line(s) waiting" in message
               for message in messages), messages


# Broker unavailable ----------------------------------------------------------------------------


def test_while_the_broker_is_down_lines_are_stored_at_once_and_batches_wait_in_order(
        store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    recorder.down = True
    emitter = emitters(lambda: store, recorder)
    for i in range(10):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert _wait_until(lambda: len(store.lines("etl-1")) == 10), "stored before the broker returns"
    assert emitter.flush(0.2) is False, "the batch is still waiting for the broker"
    assert emitter.flush(2, wait_for_broker=False) is True, "stored is enough for a workflow's end"
    for i in range(10, 20):
        emitter.emit("etl-1", "info", f"line {i}", {})
        emitter.emit("etl-2", "info", f"other {i}", {})
    assert _wait_until(lambda: len(store.lines("etl-1")) == 20 and len(store.lines("etl-2")) == 10)
    assert _wait_until(lambda: emitter.stats.enqueue_failures >= 2)
    assert recorder.batches == []

    recorder.down = False
    assert emitter.flush(15) is True
    assert len(recorder.batches) >= 2, "the batch of the first ten lines waited on its own"
    assert [event["seq"] for event in recorder.batches[0]["runs"][0]["events"]] == list(range(1, 11))
    assert recorder.seqs("etl-1") == list(range(1, 21)), "every batch, oldest first"
    assert recorder.seqs("etl-2") == list(range(1, 11))
    assert [event["message"] for event in recorder.events("etl-1")] == [f"line {i}" for i in range(20)]
    assert emitter.stats.enqueue_failures == recorder.refused
    assert emitter.stats.tasks_enqueued == len(recorder.batches)
    assert emitter.stats.stored == 30


def test_batches_waiting_for_the_broker_are_bounded_but_their_lines_stay_in_sql(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    recorder.down = True
    emitter = emitters(lambda: sqlite_store, recorder, flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(60):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.flush(0.2) is False
    assert _wait_until(lambda: emitter.stats.stored == 60), "a first flush, a first batch"
    for i in range(60, 120):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.flush(0.2) is False
    assert _wait_until(lambda: emitter.stats.not_broadcast == 60), "the oldest batch is given up"
    assert emitter.stats.dropped == 0, "its lines are not lost: they are in SQL"

    recorder.down = False
    assert emitter.flush(10)
    assert recorder.seqs("etl-1") == list(range(61, 121))
    assert _seqs(sqlite_store, "etl-1") == list(range(1, 121)), "SQL still has every line"


def test_flush_after_stop_flushes_in_the_caller(sqlite_store: LogStore, emitters: MakeEmitter
                                               ) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder)
    emitter.emit("etl-1", "info", "the last line", {})
    emitter.stop(timeout_s=10)
    assert recorder.seqs("etl-1") == [1]
    assert emitter.flush(0.3) is True, "nothing is pending"
    # A line emitted after stop() (an atexit hook, a late thread) is delivered by flush().
    emitter.emit("etl-1", "info", "after stop", {})
    assert emitter.flush(0.3) is True
    assert _messages(sqlite_store.lines("etl-1")) == ["the last line", "after stop"]
    assert recorder.seqs("etl-1") == [1, 2]
    emitter.stop(timeout_s=0.3)  # a second stop (the atexit hook) is harmless


# Bad data --------------------------------------------------------------------------------------


class _Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text form")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_data_json_cannot_hold_never_raises_and_is_stored_as_text(
        store: LogStore, emitters: MakeEmitter) -> None:
    circular: list[Any] = []
    circular.append(circular)
    emitter = emitters(lambda: store, Recorder())
    emitter.emit("etl-1", "info", "an object", {"thing": _Opaque(), "plain": object()})
    emitter.emit("etl-1", "info", "tuple keys", {(1, 2): "pair"})
    emitter.emit("etl-1", "info", "a set", {"tags": {"x"}})
    emitter.emit("etl-1", "info", "circular", circular)
    emitter.emit("etl-1", "info", 12345, None)
    emitter.emit("etl-1", "info", _Unprintable(), {})
    emitter.emit("etl-1", "verbose", "an unknown level", {})
    emitter.emit("etl-1", "info", "not a dict", [1, "two"])
    emitter.emit("etl-1", "info", "no text form", {"value": _Unprintable()})
    assert emitter.flush(10)

    lines = store.lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 10))
    obj, tuple_keys, a_set, circ, number, unprintable, unknown_level, a_list, no_text = lines
    assert obj.data["thing"] == "<opaque thing>"
    assert obj.data["plain"].startswith("<object object at ")
    assert tuple_keys.data["unserialisable"] == "{(1, 2): 'pair'}"
    assert tuple_keys.data["error"].startswith("TypeError: keys must be")
    assert a_set.data == {"tags": "{'x'}"}
    assert circ.data == {"unserialisable": "[[...]]", "error": "ValueError: Circular reference detected"}
    assert (number.message, number.data) == ("12345", {})
    assert unprintable.message == "<unprintable _Unprintable>"
    assert (unknown_level.level, unknown_level.message) == ("info", "an unknown level")
    assert a_list.data == {"value": [1, "two"]}
    assert no_text.data == {"unserialisable": "<unrepresentable dict>",
                            "error": "RuntimeError: no text form"}
    # The lines whose data or message could not be kept as given.
    assert emitter.stats.bad_data == 4


def test_clean_data_returns_plain_json_values_and_whether_they_were_kept() -> None:
    assert clean_data(None) == ({}, True)
    assert clean_data({}) == ({}, True)
    assert clean_data({"n": 1, "t": (1, 2), "x": _Opaque()}) == (
        {"n": 1, "t": [1, 2], "x": "<opaque thing>"}, True)
    assert clean_data({"ratio": math.nan, "values": [math.inf, -math.inf, 1.5]}) == (
        {"ratio": "nan", "values": ["inf", "-inf", 1.5]}, True)
    assert clean_data({"text": "a\x00b"}) == ({"text": "a\ufffdb"}, True)
    clean, ok = clean_data({("a", 1): 1})
    assert ok is False
    assert clean == {"unserialisable": "{('a', 1): 1}",
                     "error": "TypeError: keys must be str, int, float, bool or None, not tuple"}


def test_data_whose_str_raises_loses_no_other_line(sqlite_store: LogStore, emitters: MakeEmitter
                                                   ) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    emitter.emit("etl-a", "info", "before", {})
    emitter.emit("etl-b", "info", "bad data", {"value": _Unprintable()})
    emitter.emit("etl-a", "info", "after", {})
    assert emitter.flush(5)
    assert _messages(sqlite_store.lines("etl-a")) == ["before", "after"]
    [bad] = sqlite_store.lines("etl-b")
    assert bad.message == "bad data"
    assert bad.data["error"] == "RuntimeError: no text form"
    assert emitter.stats.bad_data == 1


def test_nan_and_infinity_in_data_are_stored_as_text_on_every_database(
        store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: store, Recorder())
    emitter.emit("etl-a", "info", "fine", {})
    emitter.emit("etl-b", "info", "ratio", {"ratio": math.nan, "limit": math.inf, "ok": 0.5})
    assert emitter.flush(5)
    assert _messages(store.lines("etl-a")) == ["fine"]
    [ratio] = store.lines("etl-b")
    assert (ratio.message, ratio.data) == ("ratio", {"ratio": "nan", "limit": "inf", "ok": 0.5})


def test_nul_characters_are_replaced_so_every_database_stores_the_line(
        store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: store, Recorder())
    emitter.emit("etl-a", "info", "fine", {})
    emitter.emit("etl-b", "info", "binary\x00output", {"stdout": "a\x00b"})
    assert emitter.flush(5)
    assert _messages(store.lines("etl-a")) == ["fine"]
    [binary] = store.lines("etl-b")
    assert (binary.message, binary.data) == ("binary\ufffdoutput", {"stdout": "a\ufffdb"})


def test_a_lone_surrogate_in_a_message_does_not_block_the_other_lines(
        store: LogStore, emitters: MakeEmitter) -> None:
    """E.g. a file name decoded with surrogateescape (os.listdir of a non-UTF-8 name)."""
    emitter = emitters(lambda: store, Recorder())
    emitter.emit("etl-a", "info", "fine", {})
    emitter.emit("etl-b", "info", "processing \udcff.csv", {"name": "\udcff.csv"})
    emitter.emit("etl-b", "info", "next file", {})
    assert emitter.flush(5)
    assert _messages(store.lines("etl-a")) == ["fine"]
    refused, following = store.lines("etl-b")
    assert (refused.seq, following.seq) == (1, 2)
    assert "processing" in refused.message and "\\udcff" in refused.message, "kept as escaped text"
    assert refused.data == {"unstorable": True, "error": "UnicodeEncodeError"}
    assert following.message == "next file"
    assert emitter.stats.bad_data == 1


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[LogStore]:
    log_store = LogStore.from_url(postgres_url)
    try:
        yield log_store
    finally:
        log_store.engine.dispose()


def test_a_run_id_too_long_for_sql_does_not_block_the_other_lines(
        postgres_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: postgres_store, recorder)
    emitter.emit("etl-1", "info", "fine", {})
    emitter.emit("r" * 129, "info", "a run id SQL cannot hold", {})
    assert emitter.flush(0.5)
    assert recorder.seqs("etl-1") == [1]
    assert emitter.stats.dropped == 1, "the unstorable line is counted as dropped"


# Admin events ----------------------------------------------------------------------------------


@pytest.fixture
def installed(sqlite_store: LogStore) -> Iterator[tuple[Emitter, Recorder]]:
    """An emitter installed as the process's own with ``configure``; reset afterwards."""
    recorder = Recorder()
    emitter = Emitter(store=lambda: sqlite_store, enqueue=recorder, flush_interval_ms=10)
    previous = emitter_module._factory
    reset_emitter()
    configure(lambda: emitter)
    try:
        assert get_emitter() is emitter
        yield emitter, recorder
    finally:
        reset_emitter()  # stops it
        emitter_module._factory = previous


def test_an_admin_event_goes_out_with_type_ts_and_its_data(installed: tuple[Emitter, Recorder]
                                                           ) -> None:
    emitter, recorder = installed
    before = time.time_ns() // 1_000_000
    admin_events.emit("deploy", version="1.4.2", hosts=["a", "b"], when=_Opaque())
    after = time.time_ns() // 1_000_000
    assert emitter.flush(10)
    [message] = recorder.admin()
    assert (message["channel"], message["event"]) == ("private-admin-events", "deploy")
    data = message["data"]
    assert data == {"type": "deploy", "ts": data["ts"], "version": "1.4.2", "hosts": ["a", "b"],
                    "when": "<opaque thing>"}
    assert before <= data["ts"] <= after
    assert message["id"].startswith("admin:")


@pytest.mark.parametrize("bad_type", ["has space", "a/b", "", "x" * 101, "émoji"])
def test_an_admin_event_with_an_invalid_type_is_refused_without_raising(
        installed: tuple[Emitter, Recorder], caplog: pytest.LogCaptureFixture, bad_type: str) -> None:
    emitter, recorder = installed
    with caplog.at_level(logging.WARNING, logger="workflows.admin_events"):
        admin_events.emit(bad_type, detail=1)
    admin_events.emit("deploy.v2:ok_-1", detail=2)
    assert emitter.flush(10)
    assert [message["event"] for message in recorder.admin()] == ["deploy.v2:ok_-1"]
    assert any("refused" in record.getMessage() for record in caplog.records)


def test_lifecycle_admin_events_keep_the_runs_table_in_step(
        installed: tuple[Emitter, Recorder], sqlite_store: LogStore) -> None:
    emitter, recorder = installed
    admin_events.emit("started", run_id="etl-1", workflow="etl", params={"source": "demo"})
    LogStream("etl-1").info("working")
    assert emitter.flush(10)
    run = sqlite_store.run("etl-1")
    assert run is not None
    assert (run.workflow, run.status, run.params) == ("etl", "running", {"source": "demo"})

    admin_events.emit("failed", run_id="etl-1", workflow="etl", error="ValueError: bad row")
    assert emitter.flush(10)
    run = sqlite_store.run("etl-1")
    assert run is not None
    assert (run.status, run.error) == ("failed", "ValueError: bad row")
    assert [message["event"] for message in recorder.admin()] == ["started", "failed"]
    assert recorder.seqs("etl-1") == [1], "LogStream without an emitter uses the installed one"


# LogStream -------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["has space", "a/b", "ünïcode", "tab\there", "", "emoji-🚀"])
def test_log_stream_refuses_a_run_id_with_characters_a_channel_cannot_hold(
        sqlite_store: LogStore, emitters: MakeEmitter, run_id: str) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    with pytest.raises(InvalidRunId) as refused:
        LogStream(run_id, emitter=emitter)
    assert RUN_ID_CHARS == "letters, digits and _ - = @ , . ;"
    assert RUN_ID_CHARS in str(refused.value)
    assert repr(run_id) in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_log_stream_refuses_a_run_id_longer_than_sql_or_a_channel_name_holds(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    # SQL's run_id columns hold 128 characters; "private-logs-" leaves 151 of Pusher's 164.
    assert LogStream("x" * 128, emitter=emitter).channel == "private-logs-" + "x" * 128
    with pytest.raises(InvalidRunId, match="129 characters; at most 128 are allowed"):
        LogStream("x" * 129, emitter=emitter)
    # A long prefix leaves less room in the channel name than SQL has.
    prefix = "p" * 64
    assert validate_run_id("x" * 95, prefix) == "x" * 95
    with pytest.raises(InvalidRunId, match="96 characters; at most 95 are allowed"):
        validate_run_id("x" * 96, prefix)


@pytest.mark.parametrize("run_id", ["run-1\n", "run-1\r\n", "\nrun-1"])
def test_log_stream_refuses_a_run_id_with_a_line_break(
        sqlite_store: LogStore, emitters: MakeEmitter, run_id: str) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    with pytest.raises(InvalidRunId):
        LogStream(run_id, emitter=emitter)


def test_the_longest_valid_run_id_is_stored(store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: store, Recorder())
    long_id = "r" * 128
    LogStream(long_id, emitter=emitter).info("a long id")
    LogStream("etl-1", emitter=emitter).info("another run")
    assert emitter.flush(5)
    assert _messages(store.lines("etl-1")) == ["another run"]
    assert _messages(store.lines(long_id)) == ["a long id"]


def test_log_stream_accepts_every_allowed_character_and_logs_at_each_level(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder)
    run_id = "ETL_run-2024=01@host,a.b;c9"
    with LogStream(run_id, emitter=emitter) as log:
        assert (log.run_id, log.channel) == (run_id, f"private-logs-{run_id}")
        assert repr(log) == f"<LogStream {run_id} on private-logs-{run_id}>"
        log.debug("d", step=1)
        log.info("i", rows=1200)
        log.warning("w")
        log.error("e", code="E1")
        log.log("warning", "via log", extra=True)
    # Leaving the block flushed: the lines are in SQL without an explicit flush().
    lines = sqlite_store.lines(run_id)
    assert [(line.seq, line.level, line.message, line.data) for line in lines] == [
        (1, "debug", "d", {"step": 1}), (2, "info", "i", {"rows": 1200}), (3, "warning", "w", {}),
        (4, "error", "e", {"code": "E1"}), (5, "warning", "via log", {"extra": True})]
    assert recorder.seqs(run_id) == [1, 2, 3, 4, 5]


@pytest.fixture
def stream_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"relaycast.test.{uuid.uuid4().hex[:8]}")
    log.setLevel(1)
    log.propagate = False
    try:
        yield log
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)


def test_a_log_stream_handler_feeds_a_loggers_records_with_levels_mapped(
        sqlite_store: LogStore, emitters: MakeEmitter, stream_logger: logging.Logger) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    stream = LogStream("etl-1", emitter=emitter)
    handler = stream.handler()
    assert isinstance(handler, LogStreamHandler)
    stream_logger.addHandler(handler)

    stream_logger.debug("debug %s", "message")
    stream_logger.info("rows=%d", 1200, extra={"ignored": object()})
    stream_logger.warning("careful")
    stream_logger.error("failed")
    stream_logger.critical("on fire")
    stream_logger.log(5, "below debug")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        stream_logger.exception("step crashed")
    assert emitter.flush(10)

    lines = sqlite_store.lines("etl-1")
    assert [(line.level, line.message) for line in lines] == [
        ("debug", "debug message"), ("info", "rows=1200"), ("warning", "careful"),
        ("error", "failed"), ("error", "on fire"), ("debug", "below debug"),
        ("error", "step crashed")]
    assert all(line.data["logger"] == stream_logger.name for line in lines)
    assert "traceback" not in lines[1].data, "extra fields are not copied"
    traceback = lines[-1].data["traceback"]
    assert traceback.startswith("Traceback (most recent call last)")
    assert "ZeroDivisionError: division by zero" in traceback


def test_a_log_stream_handler_honours_its_level(
        sqlite_store: LogStore, emitters: MakeEmitter, stream_logger: logging.Logger) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    stream_logger.addHandler(LogStream("etl-1", emitter=emitter).handler(logging.WARNING))
    stream_logger.info("not this")
    stream_logger.warning("this")
    assert emitter.flush(10)
    assert _messages(sqlite_store.lines("etl-1")) == ["this"]


def test_a_log_stream_handler_maps_custom_levels_to_the_nearest_level_below(
        sqlite_store: LogStore, emitters: MakeEmitter, stream_logger: logging.Logger) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    stream_logger.addHandler(LogStream("etl-1", emitter=emitter).handler())
    stream_logger.log(25, "notice")
    stream_logger.log(35, "between warning and error")
    stream_logger.log(15, "between debug and info")
    assert emitter.flush(10)
    assert [line.level for line in sqlite_store.lines("etl-1")] == ["info", "warning", "debug"]


# Fork safety ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_a_forked_child_does_not_inherit_the_parents_unflushed_lines(sqlite_url: str) -> None:
    recorder = Recorder()
    emitter = Emitter(store=lambda: store_for(sqlite_url), enqueue=recorder, flush_interval_ms=HELD)
    try:
        for i in range(3):
            emitter.emit("parent-run", "info", f"parent {i}", {})
        assert emitter.stats.emitted == 3

        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                os.close(read_fd)
                report: dict[str, Any] = {
                    "buffered_after_fork": len(emitter._debug) + len(emitter._other)}
                emitter.emit("child-run", "info", "from the child", {})
                report["flushed"] = emitter.flush(5)
                report["batches"] = recorder.batches
                with os.fdopen(write_fd, "w") as pipe:
                    json.dump(report, pipe)
                code = 0
            finally:
                os._exit(code)

        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            raw = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, raw
        child = json.loads(raw)
        assert child["buffered_after_fork"] == 0
        assert child["flushed"] is True
        child_runs = [run for batch in child["batches"] for run in batch["runs"]]
        assert [(run["run_id"], [e["message"] for e in run["events"]]) for run in child_runs] == [
            ("child-run", ["from the child"])], "the child sent none of the parent's lines"

        # The parent still owns and delivers its own lines, exactly once.
        assert emitter.flush(10)
        assert [event["message"] for event in recorder.events("parent-run")] == [
            "parent 0", "parent 1", "parent 2"]
        assert recorder.events("child-run") == []
        store = store_for(sqlite_url)
        assert _messages(store.lines("parent-run")) == ["parent 0", "parent 1", "parent 2"]
        assert _messages(store.lines("child-run")) == ["from the child"]
    finally:
        emitter.stop(timeout_s=STOP_TIMEOUT_S)
        store_for(sqlite_url).engine.dispose()
