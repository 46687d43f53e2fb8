"""The emitter end to end over a real LogStore (SQLite and PostgreSQL): the flusher thread
drives the buffer, the writer and the outbox.

``enqueue`` is the boundary to Celery (covered end to end by the pipeline tests): here it is
a :class:`~support.emitting.Recorder` that keeps every batch and can fail like a broker that
is down. Where a test needs the flusher to stay idle it uses ``HELD`` (a 60 s interval and no
threshold reached), so the only flushes are the ones the test asks for.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from support.emitting import (
    HELD,
    LateDatabase,
    MakeEmitter,
    Recorder,
    late_sqlite,
    messages,
    seqs,
    wait_until,
)

from workflows.emitter import Emitter
from workflows.store import LogStore


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
    assert seqs(store, "etl-1") == [1, 2, 3, 4, 5]

    # A retried workflow in another process: a new emitter over the same database.
    recorder = Recorder()
    second = emitters(lambda: store, recorder)
    for i in range(1, 4):
        second.emit("etl-1", "info", f"second process {i}", {})
    second.emit("etl-2", "info", "a new run starts at 1", {})
    assert second.flush(10)
    lines = store.lines("etl-1")
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert messages(lines)[5:] == ["second process 1", "second process 2", "second process 3"]
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


def test_a_full_buffer_drops_debug_lines_first_and_counts_them(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder(), flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(200):
        emitter.emit("etl-1", "debug" if i % 2 == 0 else "info", f"line {i}", {"i": i})

    assert emitter.stats.dropped == 100
    assert emitter.flush(10)

    lines = sqlite_store.lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 102)), "no gap in the numbering"
    warning = lines[0]
    assert (warning.level, warning.data) == ("warning", {"dropped": 100})
    assert "100 line(s)" in warning.message and "dropped" in warning.message
    kept = lines[1:]
    assert {line.level for line in kept} == {"info"}, "every DEBUG line went before any other"
    assert messages(kept) == [f"line {i}" for i in range(1, 200, 2)]


def test_the_flush_after_a_full_buffer_is_still_broadcast(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder, flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(150):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.stats.dropped == 50
    assert emitter.flush(10)
    assert seqs(sqlite_store, "etl-1") == list(range(1, 102))
    assert recorder.seqs("etl-1") == list(range(1, 102)), "the broker is up: all of it goes out"
    assert (emitter.stats.dropped, emitter.stats.not_broadcast) == (50, 0)


def test_without_debug_lines_the_oldest_lines_are_dropped_and_counted_per_run(
        sqlite_store: LogStore, emitters: MakeEmitter) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder(), flush_interval_ms=HELD, max_buffer_lines=100)
    for i in range(150):
        emitter.emit(("etl-a", "etl-b")[i % 2], "warning" if i % 3 else "info", f"line {i}", {})

    assert emitter.stats.dropped == 50
    assert emitter.flush(10)
    for run_id, first in (("etl-a", 50), ("etl-b", 51)):
        lines = sqlite_store.lines(run_id)
        assert [line.seq for line in lines] == list(range(1, 52))
        assert (lines[0].level, lines[0].data) == ("warning", {"dropped": 25})
        assert "25 line(s)" in lines[0].message
        assert messages(lines[1:]) == [f"line {i}" for i in range(first, 150, 2)], "newest kept"


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
    finally:
        release.set()
    assert emitter.flush(10)

    lines = sqlite_store.lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 103))
    warnings = [line for line in lines if line.message.startswith("relaycast:")]
    assert [(line.level, line.data) for line in warnings] == [("warning", {"dropped": 200})]
    others = [line.message for line in lines if line not in warnings]
    assert others == ["first"] + [f"line {i}" for i in range(200, 300)]


def test_while_sql_is_unavailable_lines_wait_and_are_all_stored_when_it_returns(
        late_database: LateDatabase, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(late_database.store, recorder)
    for i in range(10):
        emitter.emit("etl-a", "info", f"a {i}", {"i": i})
        emitter.emit("etl-b", "debug", f"b {i}", {"i": i})

    assert emitter.flush(0.3) is False, "nothing can be stored yet"
    assert wait_until(lambda: emitter.stats.store_failures >= 1)
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
        assert messages(lines) == [f"{prefix} {i}" for i in range(15)]
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
    assert wait_until(lambda: emitter.stats.dropped == 50)

    late_database.make_available()
    assert emitter.flush(15)
    lines = late_database.opened[-1].lines("etl-1")
    assert [line.seq for line in lines] == list(range(1, 102))
    assert (lines[0].level, lines[0].data) == ("warning", {"dropped": 50})
    assert messages(lines[1:]) == ([f"info {i}" for i in range(50)]
                                    + [f"debug {i}" for i in range(50, 100)])


def test_an_sql_outage_is_logged_with_the_number_of_waiting_lines(
        tmp_path: Path, emitters: MakeEmitter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="workflows.emitter")
    emitter = emitters(late_sqlite(tmp_path).store, Recorder(), flush_interval_ms=HELD)
    for i in range(5):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.flush(0.2) is False
    assert wait_until(lambda: emitter.stats.store_failures >= 1)
    messages = [record.getMessage() for record in caplog.records
                if record.name == "workflows.emitter" and record.levelno == logging.WARNING]
    assert any("SQL unavailable" in message and "5 line(s) waiting" in message
               for message in messages), messages


def test_while_the_broker_is_down_lines_are_stored_at_once_and_batches_wait_in_order(
        store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    recorder.down = True
    emitter = emitters(lambda: store, recorder)
    for i in range(10):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert wait_until(lambda: len(store.lines("etl-1")) == 10), "stored before the broker returns"
    assert emitter.flush(0.2) is False, "the batch is still waiting for the broker"
    assert emitter.flush(2, wait_for_broker=False) is True, "stored is enough for a workflow's end"
    for i in range(10, 20):
        emitter.emit("etl-1", "info", f"line {i}", {})
        emitter.emit("etl-2", "info", f"other {i}", {})
    assert wait_until(lambda: len(store.lines("etl-1")) == 20 and len(store.lines("etl-2")) == 10)
    assert wait_until(lambda: emitter.stats.enqueue_failures >= 2)
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
    assert wait_until(lambda: emitter.stats.stored == 60), "a first flush, a first batch"
    for i in range(60, 120):
        emitter.emit("etl-1", "info", f"line {i}", {})
    assert emitter.flush(0.2) is False
    assert wait_until(lambda: emitter.stats.not_broadcast == 60), "the oldest batch is given up"
    assert emitter.stats.dropped == 0, "its lines are not lost: they are in SQL"

    recorder.down = False
    assert emitter.flush(10)
    assert recorder.seqs("etl-1") == list(range(61, 121))
    assert seqs(sqlite_store, "etl-1") == list(range(1, 121)), "SQL still has every line"


def test_a_line_emitted_after_stop_is_stored_by_the_emitting_thread_and_counted(
        sqlite_store: LogStore, emitters: MakeEmitter, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: sqlite_store, recorder)
    emitter.emit("etl-1", "info", "the last line", {})
    emitter.stop(timeout_s=10)
    assert recorder.seqs("etl-1") == [1]
    assert emitter.flush(0.3) is True, "nothing is pending"
    # An atexit hook or a late thread emits after stop(): no flusher will ever take it.
    with caplog.at_level(logging.WARNING, logger="workflows.emitter"):
        emitter.emit("etl-1", "info", "after stop", {})
        emitter.emit("etl-1", "info", "and another", {})
    assert messages(sqlite_store.lines("etl-1")) == ["the last line", "after stop", "and another"]
    assert recorder.seqs("etl-1") == [1, 2, 3]
    assert emitter.stats.late == 2
    assert sum("emitted after the emitter stopped" in r.getMessage() for r in caplog.records) == 1
    emitter.stop(timeout_s=0.3)  # a second stop (the atexit hook) is harmless


def test_emit_never_raises_and_its_stats_add_up(sqlite_store: LogStore, emitters: MakeEmitter
                                                ) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    emitter.emit("etl-1", "info", "plain", {"rows": 1})
    emitter.emit("etl-1", "verbose", "\udcffname", {"bad": float("nan")})
    emitter.emit("etl-1", 50, b"bytes", object())
    assert emitter.flush(5)
    stats = emitter.stats
    assert (stats.emitted, stats.stored, stats.dropped) == (3, 3, 0)
    assert (stats.unknown_levels, stats.cleaned_text) == (1, 1)
    assert [line.level for line in sqlite_store.lines("etl-1")] == ["info", "info", "critical"]
