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
from broadcasters.ordering import GATE_TTL_S, GateStats, RunGate, Span, run_span
from broadcasters.state import SharedState
from broadcasters.wire import AppMessage, RunLines
from tasks.broadcast import AppLane, lane_span

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


def go(gate: RunGate, lanes: Sequence[Any], span: Callable[[Any], Span] = run_span
       ) -> tuple[list[list[Span]], GateStats]:
    """Publish ``lanes`` as the broadcast task does: each turn, then ``passed`` with it.
    Returns the spans of each turn and the batch's gate stats."""
    stats = GateStats()
    turns: list[list[Span]] = []
    for turn in gate.turns(lanes, stats, span):
        turns.append([span(lane) for lane in turn])
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
    turns, stats = go(gate, [lines("etl-b", 4, 5), lines("etl-a", 1, 2), lines("etl-a", 3, 4)])
    assert turns == [[("etl-a", 1, 2)], [("etl-a", 3, 4)], [("etl-b", 4, 5)]]
    assert time_.slept == [POLL_S], "a's lines did not wait for b's predecessor"
    assert (stats.turns, stats.runs, stats.timeouts) == (3, ["etl-a", "etl-a", "etl-b"], 0)


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
