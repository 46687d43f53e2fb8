"""Admin events on ``{prefix}admin-events``, through the process's installed emitter."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from support.emitting import Recorder, installed_as_the_process_emitter

from workflows import admin_events
from workflows.emitter import Emitter
from workflows.log_stream import LogStream
from workflows.store import LogStore


class _Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


@pytest.fixture
def installed(sqlite_store: LogStore) -> Iterator[tuple[Emitter, Recorder]]:
    """An emitter installed as the process's own with ``configure``; reset afterwards."""
    recorder = Recorder()
    emitter = Emitter(store=lambda: sqlite_store, enqueue=recorder, flush_interval_ms=10)
    with installed_as_the_process_emitter(emitter):
        yield emitter, recorder


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
