"""LogStream, its logging handler, and the run ids a channel name can hold."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from support.emitting import HELD, MakeEmitter, Recorder, messages, seqs, wait_until

from workflows.log_stream import (
    RUN_ID_CHARS,
    InvalidRunId,
    LogStream,
    validate_run_id,
)
from workflows.store import LogStore


@pytest.mark.parametrize("run_id", ["has space", "a/b", "ünïcode", "tab\there", "", "emoji-🚀"])
def test_log_stream_refuses_a_run_id_with_characters_a_channel_cannot_hold(
        sqlite_store: LogStore, emitters: MakeEmitter, run_id: str) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    with pytest.raises(InvalidRunId) as refused:
        LogStream(run_id, emitter=emitter)
    assert "letters, digits and _ - = @ , . ;" in str(refused.value)
    assert RUN_ID_CHARS in str(refused.value)
    assert repr(run_id) in str(refused.value)


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
    assert messages(store.lines("etl-1")) == ["another run"]
    assert messages(store.lines(long_id)) == ["a long id"]


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
        log.critical("c")
        log.log("WARN", "an alias")
        log.log(logging.ERROR, "a logging number")
    # Leaving the block stored the lines: they are in SQL without an explicit flush().
    lines = sqlite_store.lines(run_id)
    assert [(line.seq, line.level, line.message, line.data) for line in lines] == [
        (1, "debug", "d", {"step": 1}), (2, "info", "i", {"rows": 1200}), (3, "warning", "w", {}),
        (4, "error", "e", {"code": "E1"}), (5, "warning", "via log", {"extra": True}),
        (6, "critical", "c", {}), (7, "warning", "an alias", {}), (8, "error", "a logging number", {})]
    # ... and flush() (waiting for the broker) has them enqueued.
    assert log.flush(10)
    assert recorder.seqs(run_id) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_short_runs_leave_their_with_block_stored_not_enqueued_and_share_broadcast_tasks(
        store: LogStore, emitters: MakeEmitter) -> None:
    """50 runs of 10 lines, each in its own ``with``: every exit finds its lines in SQL and
    has not enqueued anything (the flusher is HELD: its next send is a minute away), and the
    flusher's next flush sends the 50 runs together."""
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder, flush_interval_ms=HELD)
    run_ids = [f"short-{r}" for r in range(50)]
    enqueued_at_exit = []
    for run_id in run_ids:
        with LogStream(run_id, emitter=emitter) as log:
            for i in range(10):
                log.info(f"line {i}", i=i)
        assert seqs(store, run_id) == list(range(1, 11)), "in SQL when the with block exits"
        enqueued_at_exit.append(len(recorder.batches))
    assert enqueued_at_exit == [0] * 50, "no with exit enqueued (nor waited for) a task"
    assert emitter.stats.stored == 500

    emitter.flush_once()  # the flusher's next (periodic) flush
    assert len(recorder.batches) <= 5
    assert len(recorder.batches) == 1, "500 lines fit one task (max_batch_lines 2000)"
    [batch] = recorder.batches
    assert [run["run_id"] for run in batch["runs"]] == run_ids, "one piece per run, in order"
    for run_id in run_ids:
        assert recorder.seqs(run_id) == list(range(1, 11))
    assert emitter.stats.tasks_enqueued == 1


def test_a_run_ended_by_close_is_sent_by_the_flusher_on_its_own(
        store: LogStore, emitters: MakeEmitter) -> None:
    """No one flushes after close(): the flusher's periodic send carries the lines."""
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder)  # 10 ms interval
    log = LogStream("closed-1", emitter=emitter)
    for i in range(10):
        log.info(f"line {i}")
    assert log.close(10)
    assert seqs(store, "closed-1") == list(range(1, 11))
    assert wait_until(lambda: recorder.seqs("closed-1") == list(range(1, 11)))


def test_lines_a_with_block_left_waiting_are_sent_when_the_emitter_stops(
        store: LogStore, emitters: MakeEmitter) -> None:
    """What process exit runs (``atexit`` → ``Emitter.stop``) sends what the exits staged."""
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder, flush_interval_ms=HELD)
    for run_id in ("exit-1", "exit-2"):
        with LogStream(run_id, emitter=emitter) as log:
            log.info("before exit")
    assert recorder.batches == []
    emitter.stop(timeout_s=10)
    assert recorder.seqs("exit-1") == recorder.seqs("exit-2") == [1]
    assert len(recorder.batches) == 1


def test_log_stream_flush_waits_for_the_broker_unless_told_not_to(
        store: LogStore, emitters: MakeEmitter) -> None:
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder, flush_interval_ms=HELD)
    log = LogStream("flushed-1", emitter=emitter)
    log.info("one")
    assert log.flush(10, wait_for_broker=False)
    assert (seqs(store, "flushed-1"), recorder.batches) == ([1], [])
    log.info("two")
    assert log.flush(10)
    assert recorder.seqs("flushed-1") == [1, 2], "both lines, in one task"
    assert len(recorder.batches) == 1


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
    stream_logger.addHandler(stream.handler())

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
        ("error", "failed"), ("critical", "on fire"), ("debug", "below debug"),
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
    assert messages(sqlite_store.lines("etl-1")) == ["this"]


def test_a_log_stream_handler_maps_custom_levels_to_the_nearest_level_below(
        sqlite_store: LogStore, emitters: MakeEmitter, stream_logger: logging.Logger) -> None:
    emitter = emitters(lambda: sqlite_store, Recorder())
    stream_logger.addHandler(LogStream("etl-1", emitter=emitter).handler())
    stream_logger.log(25, "notice")
    stream_logger.log(35, "between warning and error")
    stream_logger.log(15, "between debug and info")
    assert emitter.flush(10)
    assert [line.level for line in sqlite_store.lines("etl-1")] == ["info", "warning", "debug"]


def test_a_runs_end_does_not_force_a_broadcast_task_of_its_own(
        store: LogStore, emitters: MakeEmitter) -> None:
    """What ``workflows.base.end_run`` does at a run's end: the lifecycle admin event, then a
    store-only flush. Both wait for the next send, with the next run's lines."""
    recorder = Recorder()
    emitter = emitters(lambda: store, recorder, flush_interval_ms=HELD)
    for run_id in ("ended-1", "ended-2"):
        LogStream(run_id, emitter=emitter).info("work")
        emitter.emit_admin("finished", {"run_id": run_id, "workflow": "w", "duration_s": 0.1})
        assert emitter.flush(10, wait_for_broker=False)
    assert recorder.batches == []
    emitter.flush_once()
    [batch] = recorder.batches
    assert [run["run_id"] for run in batch["runs"]] == ["ended-1", "ended-2"]
    assert [message["data"]["run_id"] for message in batch["admin"]] == ["ended-1", "ended-2"]
