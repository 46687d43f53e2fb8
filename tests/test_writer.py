"""Numbering and writing lines to SQL (SQLite and PostgreSQL): cleaning, drop warnings,
refused data, and SQL unavailable."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.emitting import LateDatabase, late_sqlite, messages

from workflows.buffer import DropLedger, Entry
from workflows.cleaning import Cleaning
from workflows.store import LogStore
from workflows.writer import LineWriter


def _entries(run_id: str, *texts: str, level: object = "info", data: object = None
             ) -> list[Entry]:
    return [(i, run_id, level, text, data if data is not None else {}, 1_700_000_000_000 + i)
            for i, text in enumerate(texts, 1)]


@pytest.fixture
def ledger() -> DropLedger:
    return DropLedger()


def _writer(store: LogStore, ledger: DropLedger, report: Cleaning | None = None) -> LineWriter:
    return LineWriter(lambda: store, ledger, report or Cleaning())


def test_lines_are_numbered_per_run_in_one_transaction(store: LogStore, ledger: DropLedger
                                                       ) -> None:
    writer = _writer(store, ledger)
    entries = _entries("a", "a1", "a2") + _entries("b", "b1") + _entries("a", "a3")
    stored, left = writer.write(entries)
    assert left == []
    assert [(run, [e["seq"] for e in events]) for run, events in stored] == [
        ("a", [1, 2, 3]), ("b", [1])]
    assert messages(store.lines("a")) == ["a1", "a2", "a3"]
    assert writer.stored == 4


def test_a_warning_line_says_how_many_lines_a_run_lost(store: LogStore, ledger: DropLedger
                                                        ) -> None:
    ledger.count("a", 7)
    stored, _ = _writer(store, ledger).write(_entries("a", "kept"))
    lines = store.lines("a")
    assert [(line.seq, line.level) for line in lines] == [(1, "warning"), (2, "info")]
    assert lines[0].data == {"dropped": 7}
    assert "7 line(s)" in lines[0].message
    assert ledger.unreported == {}
    assert [e["seq"] for e in stored[0][1]] == [1, 2]


def test_text_a_database_cannot_hold_is_cleaned_and_every_line_stored(
        store: LogStore, ledger: DropLedger) -> None:
    report = Cleaning()
    path = os.fsdecode(b"/data/report-\xff.csv")
    entries = _entries("a", f"processing {path}", "binary\x00out", data={"path": path})
    _writer(store, ledger, report).write(entries)
    first, second = store.lines("a")
    assert first.message == "processing /data/report-\\xff.csv"
    assert first.data == {"path": "/data/report-\\xff.csv"}
    assert second.message == "binary\ufffdout"
    assert report.text == 4


def test_levels_map_and_an_unknown_one_is_kept_in_the_data(store: LogStore, ledger: DropLedger
                                                           ) -> None:
    report = Cleaning()
    writer = _writer(store, ledger, report)
    writer.write(_entries("a", "x", level="CRITICAL") + _entries("a", "y", level="warn")
                 + _entries("a", "z", level="verbose"))
    assert [(line.level, line.data) for line in store.lines("a")] == [
        ("critical", {}), ("warning", {}), ("info", {"relaycast_level": "verbose"})]
    assert report.unknown_levels == 1


def test_a_message_whose_str_raises_is_kept_as_a_marker(store: LogStore, ledger: DropLedger
                                                        ) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text form")

    entries: list[Entry] = [(1, "a", "info", Unprintable(), {}, 1), (2, "a", "info", 12345, None, 2)]
    _writer(store, ledger).write(entries)
    assert messages(store.lines("a")) == ["<unprintable Unprintable>", "12345"]


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[LogStore]:
    log_store = LogStore.from_url(postgres_url)
    yield log_store
    log_store.close()


def test_a_line_the_database_refuses_is_found_alone_and_the_others_stored(
        postgres_store: LogStore, ledger: DropLedger, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL refuses a run id longer than its column (LogStream never lets one through;
    code calling the emitter directly can)."""
    writer = _writer(postgres_store, ledger)
    with caplog.at_level(logging.WARNING, logger="workflows.emitter"):
        stored, left = writer.write(_entries("a", "before") + _entries("r" * 129, "too long")
                                    + _entries("a", "after"))
    assert left == []
    assert messages(postgres_store.lines("a")) == ["before", "after"]
    assert [e["seq"] for run, events in stored if run == "a" for e in events] == [1, 2]
    assert ledger.total == 1, "the unstorable line is counted as dropped, never silent"
    assert any("cannot be stored at all" in r.getMessage() for r in caplog.records)


def test_while_sql_is_unavailable_nothing_is_lost_and_the_writer_waits(
        tmp_path: Path, ledger: DropLedger) -> None:
    late: LateDatabase = late_sqlite(tmp_path)
    writer = LineWriter(late.store, ledger, Cleaning())
    ledger.count("a", 2)
    entries = _entries("a", "one", "two")
    stored, left = writer.write(entries)
    assert (stored, left) == ([], entries)
    assert writer.failures == 1
    assert ledger.unreported == {"a": 2}, "the drop warning waits too"
    assert not writer.ready(), "backoff before the next try"
    late.make_available()
    while not writer.ready():
        time.sleep(0.01)
    stored, left = writer.write(left)
    assert left == []
    assert messages(late.opened[-1].lines("a"))[1:] == ["one", "two"]
    for log_store in late.opened:
        log_store.close()


def test_lifecycle_events_keep_the_runs_table_in_step(store: LogStore, ledger: DropLedger) -> None:
    writer = _writer(store, ledger)
    writer.record_lifecycle([(1, "started", {"run_id": "etl-1", "workflow": "etl", "ts": 1000,
                                             "params": {"rows": 5}})])
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.workflow, run.params, run.started_at) == ("running", "etl", {"rows": 5}, 1000)
    writer.record_lifecycle([(2, "failed", {"run_id": "etl-1", "ts": 2000, "error": "boom"})])
    run = store.run("etl-1")
    assert run is not None
    assert (run.status, run.error, run.finished_at) == ("failed", "boom", 2000)
    writer.record_lifecycle([(3, "deploy", {"run_id": "etl-1", "ts": 3000})])
    assert store.run("etl-1").status == "failed"  # type: ignore[union-attr]
