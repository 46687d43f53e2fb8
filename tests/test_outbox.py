"""The outbox: stored lines cut into broadcast tasks, enqueued in order, bounded."""

from __future__ import annotations

import logging
import time

import pytest
from support.emitting import Recorder

from broadcasters.wire import Channels, LineEvent
from workflows.buffer import AdminEntry
from workflows.outbox import Outbox


def _events(first: int, count: int) -> list[LineEvent]:
    return [{"seq": s, "ts": s, "level": "info", "message": f"line {s}", "data": {}}
            for s in range(first, first + count)]


def _outbox(recorder: Recorder | None, *, max_batch_lines: int = 100,
            max_waiting_lines: int = 1000) -> Outbox:
    return Outbox(recorder, Channels("private-"), max_batch_lines=max_batch_lines,
                  max_waiting_lines=max_waiting_lines)


def test_one_flush_is_one_task_with_every_line_and_admin_event() -> None:
    recorder = Recorder()
    outbox = _outbox(recorder)
    outbox.add(1, [("etl-1", _events(1, 3)), ("etl-2", _events(1, 2))],
               [(5, "deploy", {"type": "deploy", "ts": 1, "version": "1.4.2"})])
    outbox.send()
    [batch] = recorder.batches
    assert [(run["run_id"], run["channel"]) for run in batch["runs"]] == [
        ("etl-1", "private-logs-etl-1"), ("etl-2", "private-logs-etl-2")]
    assert [message["event"] for message in batch["admin"]] == ["deploy"]
    assert batch["admin"][0]["channel"] == "private-admin-events"
    assert batch["admin"][0]["id"].startswith("admin:")
    assert "ordered" not in batch, "flushes are ordered (the default)"
    assert outbox.enqueued == 1


def test_a_flush_bigger_than_max_batch_lines_is_cut_into_tasks_in_order() -> None:
    recorder = Recorder()
    outbox = _outbox(recorder)
    outbox.add(1, [("etl-1", _events(1, 250)), ("etl-2", _events(1, 30))], [])
    outbox.send()
    sizes = [sum(len(run["events"]) for run in batch["runs"]) for batch in recorder.batches]
    assert sizes == [100, 100, 80], "etl-1's last 50 lines and etl-2's 30 share a task"
    assert recorder.seqs("etl-1") == list(range(1, 251))


def test_while_the_broker_is_down_batches_wait_in_order_with_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    recorder.down = True
    outbox = _outbox(recorder)
    with caplog.at_level(logging.WARNING, logger="workflows.emitter"):
        outbox.add(1, [("etl-1", _events(1, 10))], [])
        outbox.send()
        outbox.add(11, [("etl-1", _events(11, 10))], [])
        outbox.send()
    assert recorder.refused == 1, "the second send waited for its backoff"
    assert outbox.first_waiting_order() == 1
    assert any("broker unavailable" in r.getMessage() for r in caplog.records)
    recorder.down = False
    time.sleep(0.2)
    outbox.send()
    assert recorder.seqs("etl-1") == list(range(1, 21)), "oldest first"
    assert outbox.first_waiting_order() is None


def test_batches_waiting_past_the_bound_are_given_up_and_counted() -> None:
    recorder = Recorder()
    recorder.down = True
    outbox = _outbox(recorder, max_waiting_lines=100)
    for start in (1, 61, 121):
        outbox.add(start, [("etl-1", _events(start, 60))], [(start, "deploy", {"ts": 1})])
        outbox.send()
    assert outbox.not_broadcast == 120
    assert outbox.admin_dropped == 2
    recorder.down = False
    time.sleep(0.2)
    outbox.send()
    assert recorder.seqs("etl-1") == list(range(121, 181))


def test_without_a_broadcast_queue_wired_it_says_so_once_and_counts(
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = _outbox(None)
    with caplog.at_level(logging.WARNING, logger="workflows.emitter"):
        for start in (1, 11):
            outbox.add(start, [("etl-1", _events(start, 10))], [])
            outbox.send()
    assert outbox.not_broadcast == 20
    warnings = [r.getMessage() for r in caplog.records if "no broadcast queue" in r.getMessage()]
    assert len(warnings) == 1
    assert "CELERY_BROKER_URL or REDIS_URL" in warnings[0]


def test_adds_are_staged_until_a_send_which_makes_one_task_of_them() -> None:
    """Flushes that only store (short runs ending) share the next send's task; a run's lines
    that continue each other travel as one piece, a gap (another process's lines between)
    starts a new piece."""
    recorder = Recorder()
    outbox = _outbox(recorder)
    outbox.add(1, [("short-1", _events(1, 10))], [])
    outbox.add(11, [("short-2", _events(1, 10))], [(15, "finished", {"run_id": "short-2"})])
    outbox.add(21, [("short-1", _events(11, 5)), ("short-3", _events(1, 10))], [])
    outbox.add(36, [("short-1", _events(21, 5))], [])
    assert recorder.batches == [], "add enqueues nothing"
    assert (outbox.first_waiting_order(), outbox.waiting_batches()) == (1, 1)
    assert outbox.staged_lines == 40
    outbox.send()
    [batch] = recorder.batches
    assert [(run["run_id"], [e["seq"] for e in run["events"]]) for run in batch["runs"]] == [
        ("short-1", list(range(1, 16))), ("short-2", list(range(1, 11))),
        ("short-3", list(range(1, 11))), ("short-1", list(range(21, 26)))]
    assert [message["event"] for message in batch["admin"]] == ["finished"]
    assert (outbox.first_waiting_order(), outbox.waiting_batches()) == (None, 0)
    assert outbox.staged_lines == 0
    assert outbox.enqueued == 1


def test_staged_lines_beyond_max_batch_lines_are_cut_into_tasks_at_the_send() -> None:
    recorder = Recorder()
    outbox = _outbox(recorder, max_batch_lines=100)
    for run in range(30):
        outbox.add(run * 10 + 1, [(f"short-{run}", _events(1, 10))], [])
    outbox.send()
    assert [sum(len(run["events"]) for run in batch["runs"]) for batch in recorder.batches] == [
        100, 100, 100]
    assert [run["run_id"] for batch in recorder.batches for run in batch["runs"]] == [
        f"short-{run}" for run in range(30)]


def _runs_sent(recorder: Recorder) -> list[list[str]]:
    return [[run["run_id"] for run in batch["runs"]] for batch in recorder.batches]


def test_a_periodic_send_holds_back_the_newest_small_runs_to_fill_requests() -> None:
    recorder = Recorder()
    outbox = _outbox(recorder, max_batch_lines=1000)
    outbox.add(1, [(f"r{i}", _events(1, 10)) for i in range(23)], [])
    outbox.send(fill_requests=True)
    assert _runs_sent(recorder) == [[f"r{i}" for i in range(20)]], "two full requests"
    assert outbox.first_waiting_order() == 1, "the held runs are not handed over yet"
    outbox.add(2, [(f"r{i}", _events(1, 10)) for i in range(23, 28)], [])
    outbox.send(fill_requests=True)
    # r20-r22 were held once: they go now; of the 8 staged, r20-r22 and r23-r27 make 8
    # events, fewer than a request: nothing is held when a send fills no whole request.
    assert _runs_sent(recorder)[1] == [f"r{i}" for i in range(20, 28)]
    assert outbox.first_waiting_order() is None


def test_runs_held_once_are_never_held_again() -> None:
    recorder = Recorder()
    outbox = _outbox(recorder)
    outbox.add(1, [(f"r{i}", _events(1, 5)) for i in range(12)], [])
    outbox.send(fill_requests=True)
    assert _runs_sent(recorder) == [[f"r{i}" for i in range(10)]]
    outbox.add(2, [(f"r{i}", _events(1, 5)) for i in range(12, 21)], [])
    outbox.send(fill_requests=True)
    # 11 staged: one would be held, the newest not held before (r20); r10 and r11 go.
    assert _runs_sent(recorder)[1] == ["r10", "r11"] + [f"r{i}" for i in range(12, 20)]
    outbox.send(fill_requests=True)
    assert _runs_sent(recorder)[2] == ["r20"]


def test_nothing_is_held_back_without_fill_requests_or_beside_other_events() -> None:
    plain, with_admin, long_run = Recorder(), Recorder(), Recorder()
    deploy: list[AdminEntry] = [(1, "deploy", {})]
    cases: list[tuple[Recorder, list[AdminEntry], int]] = [
        (plain, [], 10), (with_admin, deploy, 10), (long_run, [], 500)]
    for recorder, admin, lines in cases:
        outbox = _outbox(recorder, max_batch_lines=10_000)
        outbox.add(1, [(f"r{i}", _events(1, 10)) for i in range(12)]
                   + [("big", _events(1, lines))], admin)
        outbox.send(fill_requests=recorder is not plain)
        assert len(_runs_sent(recorder)[0]) == 13, "everything staged went"
        assert outbox.first_waiting_order() is None
