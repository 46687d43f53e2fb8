"""The ordering gate (:mod:`broadcasters.ordering`): a lane's lines go after the ones before
them, across workers, with a bounded wait.

Every test runs on both shared-state backends (in memory, and a private redis-server) unless
it is about one of them. Time is the gate's injected clock and sleep: a sleep moves the
clock by hand and nothing really sleeps, so "waited the bound" is counted in polls, never
measured. What other workers do meanwhile happens inside a sleep (:attr:`Time.on_sleep`).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from broadcasters.backends import MemoryBackend, RedisBackend
from broadcasters.ordering import GATE_TTL_S, GateStats, RunGate, Span, admin_span, run_span
from broadcasters.state import SharedState
from broadcasters.wire import AdminMessage, AppMessage, RunLines
from tasks.broadcast import AppLane, RunEvent, lane_span, run_events

WAIT_S = 2.0
POLL_S = 0.25
#: Polls of one full bounded wait.
POLLS = int(WAIT_S / POLL_S)


class Time:
    """The gate's clock and sleep: ``sleep`` moves ``now`` (nothing really sleeps) and then
    runs ``on_sleep(n)`` (``n``: sleeps so far), which is where other workers act."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.slept))


@pytest.fixture
def time_() -> Time:
    return Time()


@pytest.fixture
def gate(shared_state: SharedState, time_: Time) -> RunGate:
    return RunGate(shared_state, wait_s=WAIT_S, poll_s=POLL_S, clock=time_.clock,
                   sleep=time_.sleep)


def lines(run_id: str, first: int, last: int) -> RunLines:
    return {"run_id": run_id, "channel": f"private-logs-{run_id}",
            "events": [{"seq": s, "ts": 0, "level": "info", "message": f"line {s}", "data": {}}
                       for s in range(first, last + 1)]}


def app_events(stream: str, first: int, last: int) -> AppLane:
    events: list[AppMessage] = [
        {"channel": "private-app-deploys", "event": "step", "payload": "{}",
         "id": f"app:{stream}/{s}", "stream": stream, "seq": s} for s in range(first, last + 1)]
    return AppLane(stream, events)


def label(lane: Any) -> tuple[str, int, int] | tuple[str, str]:
    """What a lane carries: (run id or ``app/{stream}``, first seq, last seq), or a run's admin
    event as (run id, event)."""
    if isinstance(lane, AppLane):
        return (f"app/{lane.stream}", lane.events[0]["seq"], lane.events[-1]["seq"])
    if isinstance(lane, RunEvent):
        return (lane.place.key, lane.message["event"])
    return (lane["run_id"], lane["events"][0]["seq"], lane["events"][-1]["seq"])


def go(gate: RunGate, lanes: Sequence[Any], span: Callable[[Any], Span | None] = run_span
       ) -> tuple[list[list[tuple[Any, ...]]], GateStats]:
    """Publish ``lanes`` as the broadcast task does: each turn, in its order, then ``passed``
    with it. Returns what each turn carried (:func:`label`) and the batch's gate stats."""
    stats = GateStats()
    turns: list[list[tuple[Any, ...]]] = []
    for turn in gate.turns(lanes, stats, span):
        turns.append([label(lane) for lane in turn])
        gate.passed(turn, span)
    return turns, stats


def test_a_runs_first_lines_go_at_once(gate: RunGate, time_: Time) -> None:
    turns, stats = go(gate, [lines("etl-1", 1, 3)])
    assert turns == [[("etl-1", 1, 3)]]
    assert (time_.slept, stats.waited_s, stats.timeouts) == ([], 0.0, 0)


def test_a_batch_whose_predecessor_has_published_goes_at_once(gate: RunGate, time_: Time) -> None:
    go(gate, [lines("etl-1", 1, 3)])
    turns, stats = go(gate, [lines("etl-1", 4, 6)])
    assert turns == [[("etl-1", 4, 6)]]
    assert time_.slept == [], "no poll: its turn had come"
    assert (stats.waited_s, stats.timeouts) == (0.0, 0)


def test_a_batch_waits_for_its_predecessor_and_goes_when_it_publishes(
        gate: RunGate, time_: Time) -> None:
    def other_worker(sleeps: int) -> None:
        if sleeps == 3:  # the batch before it, on another worker, publishes now
            gate.passed([lines("etl-1", 1, 3)])

    time_.on_sleep = other_worker
    turns, stats = go(gate, [lines("etl-1", 4, 6)])
    assert turns == [[("etl-1", 4, 6)]]
    assert time_.slept == [POLL_S] * 3, "waited until the predecessor published, not longer"
    assert (stats.waited_s, stats.timeouts) == (3 * POLL_S, 0)


def test_the_wait_is_bounded_then_the_batch_goes_anyway_and_the_run_goes_on(
        gate: RunGate, time_: Time) -> None:
    # Lines 1-3 are lost (their worker died, not redelivered yet): 4-6 must not stall the run.
    turns, stats = go(gate, [lines("etl-1", 4, 6)])
    assert turns == [[("etl-1", 4, 6)]]
    assert time_.slept == [POLL_S] * POLLS, "it waited the whole bound, then went"
    assert (stats.waited_s, stats.timeouts, stats.wait_bucket) == (WAIT_S, 1, 2000)

    turns, stats = go(gate, [lines("etl-1", 7, 9)])
    assert turns == [[("etl-1", 7, 9)]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 0), "the late batch moved the gate"


def test_lanes_of_one_batch_go_turn_by_turn_each_after_its_predecessor(
        gate: RunGate, time_: Time) -> None:
    time_.on_sleep = lambda sleeps: gate.passed([lines("etl-b", 1, 3)])
    turns, stats = go(gate, [lines("etl-b", 4, 5), lines("etl-a", 3, 4), lines("etl-a", 1, 2)])
    assert turns == [[("etl-a", 1, 2), ("etl-a", 3, 4)], [("etl-b", 4, 5)]], (
        "a's 3-4 went in the turn of its predecessor 1-2, after it")
    assert time_.slept == [POLL_S], "a's lines did not wait for b's predecessor"
    assert (stats.turns, stats.runs, stats.timeouts) == (2, ["etl-a", "etl-a", "etl-b"], 0)


def test_one_run_publishing_never_lets_another_runs_batch_go(gate: RunGate, time_: Time) -> None:
    go(gate, [lines("etl-a", 1, 5)])
    turns, stats = go(gate, [lines("etl-b", 6, 7)])
    assert turns == [[("etl-b", 6, 7)]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 1), "b waited for its own lines 1-5"


def test_a_run_and_an_app_stream_of_the_same_name_have_gates_of_their_own(
        gate: RunGate, time_: Time) -> None:
    go(gate, [lines("x", 1, 5)], lane_span)
    turns, stats = go(gate, [app_events("x", 6, 7)], lane_span)
    assert turns == [[("app/x", 6, 7)]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 1), "the run's gate did not let it go"

    # The app stream is now at 7, the run still at 5: the run's 8-9 waits for its 6-7.
    turns, stats = go(gate, [lines("x", 8, 9)], lane_span)
    assert turns == [[("x", 8, 9)]]
    assert (len(time_.slept), stats.timeouts) == (2 * POLLS, 1), "the stream's gate did not either"


def test_an_app_stream_is_ordered_like_a_run(gate: RunGate, time_: Time) -> None:
    time_.on_sleep = lambda sleeps: gate.passed([app_events("deploys", 1, 2)], lane_span)
    turns, stats = go(gate, [app_events("deploys", 3, 4)], lane_span)
    assert turns == [[("app/deploys", 3, 4)]]
    assert (time_.slept, stats.timeouts) == ([POLL_S], 0)


def test_a_redelivered_batch_never_moves_the_gate_backwards(gate: RunGate, time_: Time) -> None:
    go(gate, [lines("etl-1", 1, 3)])
    go(gate, [lines("etl-1", 4, 10)])
    for first, last in ((4, 6), (1, 3)):  # redelivered after a worker crash
        turns, _ = go(gate, [lines("etl-1", first, last)])
        assert turns == [[("etl-1", first, last)]], "a repeat goes at once (it is late anyway)"
    turns, stats = go(gate, [lines("etl-1", 11, 12)])
    assert turns == [[("etl-1", 11, 12)]]
    assert (time_.slept, stats.timeouts) == ([], 0), "the gate is still at 10"


def test_with_no_wait_configured_every_lane_goes_at_once(shared_state: SharedState, time_: Time
                                                         ) -> None:
    gate = RunGate(shared_state, wait_s=0, poll_s=POLL_S, clock=time_.clock, sleep=time_.sleep)
    turns, stats = go(gate, [lines("etl-1", 4, 6), lines("etl-2", 9, 9)])
    assert turns == [[("etl-1", 4, 6), ("etl-2", 9, 9)]]
    assert (time_.slept, stats.timeouts) == ([], 0)


def test_a_run_whose_gate_expired_waits_the_bound_once(time_: Time) -> None:
    """In memory, where the state's clock can be moved too (on Redis the TTL is Redis's)."""
    state = SharedState(MemoryBackend(clock=time_.clock), clock=time_.clock)
    gate = RunGate(state, wait_s=WAIT_S, poll_s=POLL_S, clock=time_.clock, sleep=time_.sleep)
    go(gate, [lines("etl-1", 1, 5)])
    time_.now += GATE_TTL_S + 1  # idle for a day: the gate is gone
    _, stats = go(gate, [lines("etl-1", 6, 7)])
    assert (len(time_.slept), stats.timeouts) == (POLLS, 1)
    _, stats = go(gate, [lines("etl-1", 8, 9)])
    assert (len(time_.slept), stats.timeouts) == (POLLS, 0), "once: the gate is back"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_with_redis_unreachable_nothing_waits(time_: Time) -> None:
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{_closed_port()}",
                                    prefix=f"test-{uuid.uuid4().hex[:8]}:")
    state = SharedState(backend)
    gate = RunGate(state, wait_s=WAIT_S, poll_s=POLL_S, clock=time_.clock, sleep=time_.sleep)
    try:
        turns, stats = go(gate, [lines("etl-1", 4, 6)])
    finally:
        backend.close()
    assert turns == [[("etl-1", 4, 6)]]
    assert (time_.slept, stats.timeouts) == ([], 0), "failed open"
    assert state.errors == 2, "the read of the gate and its move, each counted"


# A run's admin events: lanes of the run (started before line 1, the end after its last) -----


def admin(run_id: str, event: str, **data: Any) -> AdminMessage:
    return {"channel": "private-admin-events", "event": event,
            "data": {"type": event, "ts": 0, "run_id": run_id, **data}, "id": f"admin:{event}"}


def event_lane(message: AdminMessage) -> RunEvent:
    [lane], others = run_events([message])
    assert others == []
    return lane


def started(run_id: str) -> RunEvent:
    return event_lane(admin(run_id, "started", workflow="etl"))


def ended(run_id: str, last_seq: int, event: str = "finished") -> RunEvent:
    return event_lane(admin(run_id, event, workflow="etl", last_seq=last_seq))


def after_start(*run_ids: str) -> Callable[[Any], Span | None]:
    """The span of a batch whose ``after_start`` lists ``run_ids``."""
    return lambda lane: lane_span(lane, frozenset(run_ids))


def test_a_whole_short_run_in_one_batch_goes_in_one_turn_started_lines_end(
        gate: RunGate, time_: Time) -> None:
    batch = [ended("etl-1", 6), lines("etl-1", 4, 6), lines("etl-1", 1, 3), started("etl-1")]
    turns, stats = go(gate, batch, after_start("etl-1"))
    assert turns == [[("etl-1", "started"), ("etl-1", 1, 3), ("etl-1", 4, 6),
                      ("etl-1", "finished")]]
    assert (time_.slept, stats.timeouts) == ([], 0), "each followed the one before it: no wait"


def test_a_runs_first_lines_wait_for_its_started_on_another_worker_then_go(
        gate: RunGate, time_: Time) -> None:
    def other_worker(sleeps: int) -> None:
        if sleeps == 2:
            gate.passed([started("etl-1")], lane_span)

    time_.on_sleep = other_worker
    turns, stats = go(gate, [lines("etl-1", 1, 3)], after_start("etl-1"))
    assert turns == [[("etl-1", 1, 3)]]
    assert time_.slept == [POLL_S] * 2, "went as soon as the started had its turn"
    assert stats.timeouts == 0


def test_a_run_without_a_started_never_waits_for_one(gate: RunGate, time_: Time) -> None:
    # A plain script's run (LogStream alone): its batches do not list it in after_start.
    turns, stats = go(gate, [lines("script-1", 1, 3)], after_start("other-run"))
    assert turns == [[("script-1", 1, 3)]]
    assert (time_.slept, stats.timeouts) == ([], 0)


def test_first_lines_whose_started_is_lost_wait_the_bound_then_go(
        gate: RunGate, time_: Time) -> None:
    turns, stats = go(gate, [lines("etl-1", 1, 3)], after_start("etl-1"))
    assert turns == [[("etl-1", 1, 3)]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 1)
    turns, stats = go(gate, [started("etl-1")], lane_span)
    assert turns == [[("etl-1", "started")]], "the late started goes at once"
    turns, stats = go(gate, [lines("etl-1", 4, 5)], lane_span)
    assert (len(time_.slept), stats.timeouts) == (POLLS, 0), (
        "the late started never moved the gate back from 3")


def test_a_started_goes_at_once_and_never_waits(gate: RunGate, time_: Time) -> None:
    turns, stats = go(gate, [started("etl-1")], lane_span)
    assert turns == [[("etl-1", "started")]]
    assert (time_.slept, stats.timeouts) == ([], 0)


def test_an_end_waits_until_the_runs_last_line_had_its_turn_then_goes(
        gate: RunGate, time_: Time) -> None:
    go(gate, [started("etl-1"), lines("etl-1", 1, 3)], after_start("etl-1"))

    def other_worker(sleeps: int) -> None:
        if sleeps == 1:
            gate.passed([lines("etl-1", 4, 6)])  # not yet the last line
        if sleeps == 3:
            gate.passed([lines("etl-1", 7, 9)])

    time_.on_sleep = other_worker
    turns, stats = go(gate, [ended("etl-1", 9)], lane_span)
    assert turns == [[("etl-1", "finished")]]
    assert time_.slept == [POLL_S] * 3, "it went once line 9 had its turn, not at line 6"
    assert stats.timeouts == 0


def test_an_end_whose_last_lines_are_lost_waits_the_bound_then_goes(
        gate: RunGate, time_: Time) -> None:
    go(gate, [lines("etl-1", 1, 3)])
    turns, stats = go(gate, [ended("etl-1", 9, "failed")], lane_span)
    assert turns == [[("etl-1", "failed")]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 1)


def test_the_end_of_a_run_with_no_line_follows_its_started(gate: RunGate, time_: Time) -> None:
    time_.on_sleep = lambda sleeps: gate.passed([started("quiet-1")], lane_span)
    turns, stats = go(gate, [ended("quiet-1", 0)], lane_span)
    assert turns == [[("quiet-1", "finished")]]
    assert (time_.slept, stats.timeouts) == ([POLL_S], 0)


def test_an_end_waiting_holds_back_no_other_run_of_its_batch(gate: RunGate, time_: Time) -> None:
    go(gate, [lines("etl-a", 1, 3)])
    time_.on_sleep = lambda sleeps: gate.passed([lines("etl-a", 4, 5)]) if sleeps == 2 else None
    turns, stats = go(gate, [ended("etl-a", 5), lines("etl-b", 1, 4), started("etl-c")],
                      lane_span)
    assert turns == [[("etl-b", 1, 4), ("etl-c", "started")], [("etl-a", "finished")]]
    assert (len(time_.slept), stats.timeouts) == (2, 0)


def test_after_the_bound_a_batch_still_goes_in_its_runs_order(gate: RunGate, time_: Time) -> None:
    # The started (another batch) never comes: lines and end go anyway, lines first.
    turns, stats = go(gate, [ended("etl-1", 3), lines("etl-1", 1, 3)], after_start("etl-1"))
    assert turns == [[("etl-1", 1, 3), ("etl-1", "finished")]]
    assert (len(time_.slept), stats.timeouts) == (POLLS, 2)


def test_with_no_wait_configured_a_batch_still_goes_in_its_runs_order(
        shared_state: SharedState, time_: Time) -> None:
    gate = RunGate(shared_state, wait_s=0, poll_s=POLL_S, clock=time_.clock, sleep=time_.sleep)
    turns, _ = go(gate, [ended("etl-1", 3), lines("etl-1", 1, 3), started("etl-1")],
                  after_start("etl-1"))
    assert turns == [[("etl-1", "started"), ("etl-1", 1, 3), ("etl-1", "finished")]]


@pytest.mark.parametrize("message", [
    admin("etl-1", "deploy", version="1.4.2"),
    {"channel": "private-admin-events", "event": "started", "data": {"type": "started"},
     "id": "admin:no-run"},
    admin("etl-1", "finished"),  # an end from an emitter that did not say its last line
    admin("etl-1", "finished", last_seq=True),
    admin("etl-1", "finished", last_seq=-1),
], ids=["deploy", "started-without-run", "end-without-last-seq", "bool", "negative"])
def test_admin_events_that_are_not_a_runs_own_have_no_place_at_the_gate(
        message: AdminMessage) -> None:
    assert admin_span(message) is None
    assert run_events([message]) == ([], [message]), "they go with the batch's first send"


def test_a_started_and_an_end_have_their_places_in_the_runs_lane() -> None:
    assert admin_span(admin("etl-1", "started")) == Span("etl-1", None, 0)
    assert admin_span(admin("etl-1", "lost", last_seq=42)) == Span("etl-1", 42, 42), (
        "any end carrying last_seq, not only finished and failed")
