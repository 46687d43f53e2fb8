"""LogStream, its logging handler, and the run ids a channel name can hold."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from support.emitting import MakeEmitter, Recorder, messages

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
    # Leaving the block flushed: the lines are in SQL without an explicit flush().
    lines = sqlite_store.lines(run_id)
    assert [(line.seq, line.level, line.message, line.data) for line in lines] == [
        (1, "debug", "d", {"step": 1}), (2, "info", "i", {"rows": 1200}), (3, "warning", "w", {}),
        (4, "error", "e", {"code": "E1"}), (5, "warning", "via log", {"extra": True}),
        (6, "critical", "c", {}), (7, "warning", "an alias", {}), (8, "error", "a logging number", {})]
    assert recorder.seqs(run_id) == [1, 2, 3, 4, 5, 6, 7, 8]


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
