"""This process's emitter: configured by the layer that wires it, rebuilt clean after a fork."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from support.emitting import HELD, STOP_TIMEOUT_S, Recorder, messages
from support.forking import in_forked_child

from workflows import process
from workflows.emitter import Emitter
from workflows.log_stream import LogStream
from workflows.process import configure, get_emitter, reset_emitter, track
from workflows.store import LogStore, store_for


@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_a_forked_child_does_not_inherit_the_parents_unflushed_lines(sqlite_url: str) -> None:
    recorder = Recorder()
    emitter = track(Emitter(store=lambda: store_for(sqlite_url), enqueue=recorder,
                            flush_interval_ms=HELD))
    try:
        for i in range(3):
            emitter.emit("parent-run", "info", f"parent {i}", {})
        assert emitter.stats.emitted == 3

        def in_the_child() -> dict[str, Any]:
            report: dict[str, Any] = {"buffered_after_fork": emitter.buffer.waiting()}
            emitter.emit("child-run", "info", "from the child", {})
            report["flushed"] = emitter.flush(5)
            report["batches"] = recorder.batches
            return report

        child = in_forked_child(in_the_child)
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
        assert messages(store.lines("parent-run")) == ["parent 0", "parent 1", "parent 2"]
        assert messages(store.lines("child-run")) == ["from the child"]
    finally:
        emitter.stop(timeout_s=STOP_TIMEOUT_S)
        store_for(sqlite_url).engine.dispose()



@pytest.fixture
def fresh_process() -> Iterator[None]:
    """No emitter configured or built; whatever was there is put back afterwards."""
    previous = process._factory
    reset_emitter()
    configure(None)
    try:
        yield
    finally:
        reset_emitter()
        configure(previous)


def test_configure_hands_the_process_its_emitter_built_once_on_first_use(
        fresh_process: None, sqlite_store: LogStore) -> None:
    built: list[Emitter] = []

    def factory() -> Emitter:
        built.append(Emitter(store=lambda: sqlite_store, enqueue=Recorder(), flush_interval_ms=10))
        return built[-1]

    configure(factory)
    assert built == [], "nothing is built before it is needed"
    first = get_emitter()
    assert get_emitter() is first
    assert built == [first]
    reset_emitter()
    assert get_emitter() is not first, "a reset builds a new one"


def test_without_a_factory_lines_are_stored_and_nothing_pretends_to_broadcast(
        fresh_process: None, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    with caplog.at_level(logging.WARNING, logger="workflows.emitter"):
        log = LogStream("plain-script")
        log.info("from code that never imported tasks")
        assert log.flush(10, wait_for_broker=False)
        assert get_emitter().flush(10)
    assert messages(store_for(sqlite_url).lines("plain-script")) == [
        "from code that never imported tasks"]
    assert get_emitter().stats.not_broadcast == 1
    assert any("no broadcast queue in this process" in r.getMessage() for r in caplog.records)
    store_for(sqlite_url).close()


def test_importing_tasks_wires_the_emitter_to_the_broadcast_queue(
        fresh_process: None, sqlite_url: str) -> None:
    from support.workers import run_python

    script = ("import tasks.celery_app\n"
              "from workflows.process import get_emitter\n"
              "from tasks.broadcast import enqueue_batch\n"
              "print(get_emitter().outbox._enqueue is enqueue_batch)\n")
    result = run_python("-c", script, env={"DATABASE_URL": sqlite_url})
    assert result.stdout.strip() == "True", result.stderr
