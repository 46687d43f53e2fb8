"""Capture: a workflow task's own logging records and printed lines become lines of its run.

In-process tests drive the handler and the stream wrapper directly on a real emitter and
SQLite; ``test_capture_worker.py`` runs a workflow module of the user's (written to
``tmp_path``, imported by a real ``celery -A relaycast worker`` through ``--include``, here
its environment variable ``CELERY_WORKER_INCLUDE``) against a private Redis broker.
"""

from __future__ import annotations

import datetime
import io
import logging
import sys
from collections.abc import Callable, Iterator

import pytest
from billiard.einfo import ExceptionInfo  # type: ignore[import-untyped]
from celery.exceptions import Retry
from support.emitting import MakeEmitter, Recorder

from config import ConfigError, load_settings
from workflows import capture
from workflows.base import retry_countdown_s, retry_line
from workflows.emitter import Emitter
from workflows.models import LogLine
from workflows.store import LogStore

# In-process: the handler and the streams ---------------------------------------------------------


@pytest.fixture
def capturing() -> Iterator[None]:
    """The capture handler on the root logger (as the first task installs it), removed after."""
    saved, streams = capture._config, (sys.stdout, sys.stderr)
    capture.configure("logging,stdout", "DEBUG")
    root, task_logger = logging.getLogger(), logging.getLogger("celery.task")
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        root.removeHandler(capture.handler)
        task_logger.removeHandler(capture.task_handler)
        capture._config = saved


@pytest.fixture
def emitter(sqlite_store: LogStore, emitters: MakeEmitter) -> Emitter:
    return emitters(lambda: sqlite_store, Recorder())


def _in_run(emitter: Emitter, run_id: str, body: Callable[[], None]) -> None:
    token = capture.begin(run_id, emitter)
    assert token is not None
    try:
        body()
    finally:
        capture.end(token)
    assert emitter.flush(5)


def _lines(store: LogStore, run_id: str) -> list[tuple[str, str, str]]:
    return [(line.level, line.message, _source(line)) for line in store.lines(run_id)]


def _source(line: LogLine) -> str:
    return str(line.data.get("logger") or line.data.get("stream") or "")


def test_records_become_lines_with_their_level_mapped_and_the_logger_named(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    acme = logging.getLogger("acme.capture-levels")
    acme.setLevel(logging.DEBUG)

    def body() -> None:
        acme.debug("d")
        acme.info("i %s", "arg")
        acme.warning("w")
        acme.error("e")
        acme.critical("c")
        acme.log(25, "between info and warning")
        acme.log(45, "between error and critical")

    _in_run(emitter, "levels-1", body)
    name = "acme.capture-levels"
    assert _lines(sqlite_store, "levels-1") == [
        ("debug", "d", name), ("info", "i arg", name), ("warning", "w", name),
        ("error", "e", name), ("critical", "c", name), ("info", "between info and warning", name),
        ("error", "between error and critical", name)]


def test_exc_info_is_stored_as_the_formatted_traceback(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    acme = logging.getLogger("acme")
    table: dict[str, int] = {}

    def body() -> None:
        try:
            table["missing"] += 1
        except KeyError:
            acme.exception("lookup failed")
        acme.error("no traceback here")

    _in_run(emitter, "tb-1", body)
    failed, plain = sqlite_store.lines("tb-1")
    assert (failed.level, failed.message) == ("error", "lookup failed")
    assert failed.data["traceback"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in failed.data["traceback"]
    assert "traceback" not in plain.data


def test_nothing_is_captured_outside_a_task(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    acme = logging.getLogger("acme")
    token = capture.begin("ctx-1", emitter)
    capture.end(token)
    assert capture.current.get() is None, "end resets the run"
    acme.warning("after the task")
    record = logging.LogRecord("acme", logging.ERROR, __file__, 1, "direct", None, None)
    assert capture.handler.handle(record) is False
    assert emitter.flush(5)
    assert sqlite_store.lines("ctx-1") == []


def test_relaycast_and_celery_loggers_are_never_captured_but_a_users_tasks_module_is(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    def body() -> None:
        for name in ("workflows.emitter", "workflows", "broadcasters.manager", "tasks.broadcast",
                     "relaycast.cli", "config", "celery.app.trace", "celery.worker.strategy",
                     "celery.redirected", "kombu.connection", "sqlalchemy.engine", "urllib3"):
            logging.getLogger(name).warning("machinery %s", name)
        logging.getLogger("tasks").warning("a user's tasks.py")
        logging.getLogger("workflows_of_acme").warning("not relaycast's workflows package")

    _in_run(emitter, "own-1", body)
    assert _lines(sqlite_store, "own-1") == [
        ("warning", "a user's tasks.py", "tasks"),
        ("warning", "not relaycast's workflows package", "workflows_of_acme")]


def test_a_record_passing_two_capture_handlers_is_stored_once(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    acme = logging.getLogger("acme.twice")
    acme.addHandler(capture.task_handler)  # and the root logger's, which it propagates to
    try:
        _in_run(emitter, "once-1", lambda: acme.warning("once"))
    finally:
        acme.removeHandler(capture.task_handler)
    assert _lines(sqlite_store, "once-1") == [("warning", "once", "acme.twice")]


def test_records_below_the_capture_level_are_left_out(
        emitter: Emitter, sqlite_store: LogStore, capturing: None) -> None:
    capture.configure("logging", "WARNING")
    acme = logging.getLogger("acme")
    acme.setLevel(logging.DEBUG)

    def body() -> None:
        acme.info("too low")
        acme.warning("kept")

    _in_run(emitter, "lvl-1", body)
    assert _lines(sqlite_store, "lvl-1") == [("warning", "kept", "acme")]


def test_printed_lines_become_lines_whole_and_still_reach_the_stream(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    out, err = io.StringIO(), io.StringIO()
    stdout, stderr = capture.RunStream(out, "stdout"), capture.RunStream(err, "stderr")

    def body() -> None:
        print("several", "parts", 3, file=stdout)  # four writes, one line
        print(file=stdout)  # a blank line is not a line of the run
        print("oops", file=stderr)
        stdout.write("two\nlines\n")
        stdout.write("no newline at the end")

    stdout.write("before the task\n")
    _in_run(emitter, "print-1", body)
    stdout.write("after the task\n")
    assert _lines(sqlite_store, "print-1") == [
        ("info", "several parts 3", "stdout"), ("error", "oops", "stderr"),
        ("info", "two", "stdout"), ("info", "lines", "stdout"),
        ("info", "no newline at the end", "stdout")]
    assert out.getvalue() == ("before the task\nseveral parts 3\n\ntwo\nlines\n"
                              "no newline at the endafter the task\n")
    assert err.getvalue() == "oops\n"


def test_a_record_whose_arguments_do_not_fit_is_stored_and_never_raises(
        capturing: None, emitter: Emitter, sqlite_store: LogStore) -> None:
    logging.raiseExceptions = False  # the other (stream) handlers would print the error
    try:
        _in_run(emitter, "bad-1", lambda: logging.getLogger("acme").warning("%d items", "many"))
    finally:
        logging.raiseExceptions = True
    [line] = sqlite_store.lines("bad-1")
    assert line.message == "%d items ('many',)"


def _einfo(retry: Retry) -> ExceptionInfo:
    """What Celery hands ``on_retry`` (``celery.app.trace``: ``ExceptionInfo`` of the Retry)."""
    try:
        raise retry
    except Retry:
        return ExceptionInfo()


def test_the_retry_line_says_which_attempt_of_how_many_and_when() -> None:
    reset = ConnectionError("reset by peer")
    countdown = retry_countdown_s(_einfo(Retry(exc=reset, when=4)))
    assert retry_line(1, 3, countdown, reset) == "retry 1/3 in 4 s: ConnectionError: reset by peer"
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    in_30_s = retry_countdown_s(_einfo(Retry(exc=reset, when=eta)))
    assert in_30_s is not None
    assert 0 < in_30_s <= 30
    assert retry_line(2, None, 1.25, TimeoutError("slow")) == "retry 2/∞ in 1.2 s: TimeoutError: slow"


@pytest.mark.parametrize(("given", "expected"), [
    ({}, ("logging,stdout", "INFO")),
    ({"RELAYCAST_CAPTURE": " Stdout , LOGGING ", "RELAYCAST_CAPTURE_LEVEL": "warning"},
     ("logging,stdout", "WARNING")),
    ({"RELAYCAST_CAPTURE": "logging"}, ("logging", "INFO")),
    ({"RELAYCAST_CAPTURE": "OFF", "RELAYCAST_CAPTURE_LEVEL": "debug"}, ("off", "DEBUG")),
])
def test_capture_settings_are_read_and_normalised(given: dict[str, str],
                                                  expected: tuple[str, str]) -> None:
    settings = load_settings(**given)
    assert (settings.capture, settings.capture_level) == expected


@pytest.mark.parametrize(("given", "variable"), [
    ({"RELAYCAST_CAPTURE": "logging,files"}, "RELAYCAST_CAPTURE"),
    ({"RELAYCAST_CAPTURE": " , "}, "RELAYCAST_CAPTURE"),
    ({"RELAYCAST_CAPTURE": "off,logging"}, "RELAYCAST_CAPTURE"),
    ({"RELAYCAST_CAPTURE_LEVEL": "LOUD"}, "RELAYCAST_CAPTURE_LEVEL"),
])
def test_a_bad_capture_setting_stops_start_up_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, given: dict[str, str], variable: str) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"invalid configuration: {variable}: ")
