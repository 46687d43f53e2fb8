"""Shared state: flags, outcomes and counters on Redis and in memory, healing by TTL,
failing open (or, for an operator's own calls, saying that nothing was stored)."""

from __future__ import annotations

import time

import pytest
from support.clock import FakeClock

from broadcasters.backends import RedisBackend, StateUnavailable
from broadcasters.state import (
    BroadcasterState,
    Counts,
    FlagCause,
    Outcome,
    SharedState,
    counts_from_send,
    next_utc_midnight,
    sent_series,
)

UNREACHABLE = "redis://127.0.0.1:1/0"


def test_a_disabled_flag_is_seen_with_reason_until_and_cause(shared_state: SharedState) -> None:
    until = time.time() + 60
    shared_state.disable("pusher", "quota exceeded", until=until, set_by="worker-a",
                         cause=FlagCause.QUOTA)
    flag = shared_state.flags(["pusher", "log"])["pusher"]
    assert (flag.reason, flag.set_by, flag.cause) == ("quota exceeded", "worker-a", FlagCause.QUOTA)
    assert flag.until == pytest.approx(until)
    assert flag.kind is BroadcasterState.DISABLED
    assert "log" not in shared_state.flags(["pusher", "log"])


def test_a_flag_lifts_by_itself_at_until(shared_state: SharedState) -> None:
    clock = FakeClock()
    state = SharedState(shared_state.backend, clock=clock)
    state.disable("pusher", "quota exceeded", until=clock.now + 30)
    clock.advance(29.5)
    assert "pusher" in state.flags(["pusher"])
    clock.advance(0.5)
    assert state.flags(["pusher"]) == {}


def test_enable_lifts_disabled_and_paused(shared_state: SharedState) -> None:
    shared_state.disable("pusher", "credentials rejected", until=None)
    shared_state.pause("ably", 30, "rate limited")
    assert set(shared_state.flags(["pusher", "ably"])) == {"pusher", "ably"}
    paused = shared_state.flags(["ably"])["ably"]
    assert (paused.kind, paused.cause) == (BroadcasterState.PAUSED, FlagCause.RATE_LIMIT)
    shared_state.enable("pusher")
    shared_state.enable("ably")
    assert shared_state.flags(["pusher", "ably"]) == {}


def test_counters_add_up_over_the_hour_and_the_day(shared_state: SharedState) -> None:
    shared_state.record({"pusher": counts_from_send([3.0, 40.0], 15, {"transient": 2})})
    shared_state.record({"pusher": counts_from_send([4.0], 5, {"quota": 1}, skipped=0),
                         "log": Counts(skipped=7)})
    counts = shared_state.counts("pusher")
    assert counts.sent == 20
    assert counts.requests == 3
    assert counts.failed == {"transient": 2, "quota": 1}
    assert counts.latency_percentile_ms(0.5) == 5.0
    assert counts.latency_percentile_ms(0.95) == 50.0
    assert shared_state.counts("log").skipped == 7
    assert shared_state.usage_today("pusher") == {"messages": 20, "requests": 3}


def test_the_latest_outcome_says_whether_a_broadcaster_is_failing_now(
        shared_state: SharedState) -> None:
    clock = FakeClock()
    state = SharedState(shared_state.backend, clock=clock)
    state.record({"pusher": Counts(sent=3, requests=1)})
    first = state.outcomes(["pusher"])["pusher"]
    assert (first.ok_at, first.error_at) == (clock.now, None)
    assert first.failing_since(clock.now, within_s=60) is None
    clock.advance(1)
    state.record({"pusher": Counts(requests=1, failed={"transient": 1})},
                 {"pusher": "transient: HTTP 502: bad gateway"})
    failing = state.outcomes(["pusher"])["pusher"]
    assert failing.error == "transient: HTTP 502: bad gateway"
    assert failing.error_at == clock.now
    assert failing.failing_since(clock.now, within_s=60) == clock.now
    assert failing.failing_since(clock.now + 120, within_s=60) is None, "an old failure is history"
    clock.advance(1)
    state.record({"pusher": Counts(sent=1, requests=1)})
    assert state.outcomes(["pusher"])["pusher"].failing_since(clock.now, 60) is None


def test_an_outcome_with_a_later_success_is_not_failing() -> None:
    assert Outcome(ok_at=10.0, error_at=5.0).failing_since(11.0, within_s=60) is None
    assert Outcome(ok_at=5.0, error_at=10.0).failing_since(11.0, within_s=60) == 10.0
    assert Outcome().failing_since(11.0, within_s=60) is None


def test_unreachable_redis_fails_open_and_counts_it() -> None:
    state = SharedState(RedisBackend.from_url(UNREACHABLE, timeout_s=0.2))
    assert state.flags(["pusher"]) == {}
    state.disable("pusher", "quota exceeded", until=time.time() + 60)
    state.record({"pusher": Counts(sent=1, requests=1)})
    assert state.counts("pusher").sent == 0
    assert state.errors == 5, "flags, disable, counters, outcome, counts: each failed open"


def test_an_operators_disable_or_enable_raises_when_nothing_could_be_stored() -> None:
    state = SharedState(RedisBackend.from_url(UNREACHABLE, timeout_s=0.2))
    with pytest.raises(StateUnavailable):
        state.disable("pusher", "maintenance", until=None, strict=True)
    with pytest.raises(StateUnavailable):
        state.enable("pusher")


def test_next_utc_midnight() -> None:
    assert next_utc_midnight(1_700_000_000) == 1_700_006_400  # 2023-11-14 22:13 UTC → 15th 00:00


def sent_per_minute(state: SharedState, name: str, minutes: int = 60) -> list[int]:
    """What the API's chart gets (through the live report's rows)."""
    return sent_series(state.stats_tables(name, minutes), minutes)


def test_sent_per_minute_gives_the_last_hours_minute_buckets_oldest_first(
        shared_state: SharedState) -> None:
    now = [1_700_000_000.0]  # 22:13:20 UTC: minute bucket 28_333_333
    state = SharedState(shared_state.backend, clock=lambda: now[0])
    state.record({"pusher": Counts(sent=5, requests=1), "log": Counts(sent=2, requests=1)})
    now[0] += 120  # two minutes later
    state.record({"pusher": Counts(sent=7, requests=1)})
    state.record({"pusher": Counts(sent=1, requests=1)})
    series = sent_per_minute(state, "pusher")
    assert len(series) == 60
    assert series[-3:] == [5, 0, 8]
    assert sum(series) == 13
    assert sent_per_minute(state, "log", minutes=5) == [0, 0, 2, 0, 0]
    now[0] += 3600  # an hour on, the old buckets are out of the window
    assert sent_per_minute(state, "pusher") == [0] * 60


def test_sent_per_minute_is_zeros_when_redis_is_unreachable() -> None:
    state = SharedState(RedisBackend.from_url(UNREACHABLE, timeout_s=0.2))
    assert sent_per_minute(state, "pusher", minutes=3) == [0, 0, 0]
    assert state.errors == 1
