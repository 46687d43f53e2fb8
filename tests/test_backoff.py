"""compute_backoff: a pure function, driven with an injected ``rand`` (no sleeping)."""

from __future__ import annotations

import math
import random

import pytest

from broadcasters.backoff import compute_backoff


def _top() -> float:
    """The largest value ``random.random`` can return (it never returns 1.0); the delay
    computed from it may round up to the full delay in floating point."""
    return math.nextafter(1.0, 0.0)


def test_without_jitter_the_delay_doubles_with_each_attempt() -> None:
    delays = [compute_backoff(attempt, jitter=0.0) for attempt in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_base_and_factor_shape_the_exponential_curve() -> None:
    delays = [compute_backoff(attempt, base_s=0.5, factor=3.0, max_s=1000.0, jitter=0.0)
              for attempt in range(5)]
    assert delays == pytest.approx([0.5, 1.5, 4.5, 13.5, 40.5])


def test_the_delay_is_capped_at_max_s_even_for_huge_attempt_numbers() -> None:
    assert compute_backoff(6, jitter=0.0) == 60.0  # 64 s uncapped
    assert compute_backoff(10, max_s=30.0, jitter=0.0) == 30.0
    assert compute_backoff(10_000, jitter=0.0) == 60.0
    assert compute_backoff(10_000_000, base_s=1e300, jitter=0.0) == 60.0


def test_jitter_randomises_only_the_last_fraction_of_the_delay() -> None:
    # attempt 3 -> 8 s; jitter 0.5 -> anywhere in [4, 8).
    assert compute_backoff(3, jitter=0.5, rand=lambda: 0.0) == 4.0
    assert compute_backoff(3, jitter=0.5, rand=lambda: 0.5) == 6.0
    assert 7.99 < compute_backoff(3, jitter=0.5, rand=_top) <= 8.0
    # jitter 1: anywhere in [0, delay); jitter 0 ignores rand entirely.
    assert compute_backoff(3, jitter=1.0, rand=lambda: 0.0) == 0.0
    assert compute_backoff(3, jitter=0.0, rand=lambda: 0.123) == 8.0


def test_jittered_delays_stay_within_bounds_and_actually_vary() -> None:
    source = random.Random(1234)
    for attempt in range(12):
        uncapped = min(60.0, 2.0 ** attempt)
        delays = [compute_backoff(attempt, jitter=0.25, rand=source.random) for _ in range(50)]
        assert all(uncapped * 0.75 <= d <= uncapped for d in delays), (attempt, delays)
        assert len(set(delays)) > 1, "jitter must spread workers that failed together"


def test_the_jittered_cap_is_applied_before_the_jitter() -> None:
    # Capped to 60 first, then the last half is random: never above the cap.
    assert compute_backoff(50, jitter=0.5, rand=lambda: 0.0) == 30.0
    assert 59.99 < compute_backoff(50, jitter=0.5, rand=_top) <= 60.0


def test_a_providers_retry_after_is_a_floor() -> None:
    assert compute_backoff(0, jitter=0.0, retry_after_s=30.0) == 30.0
    # Honoured above max_s too: the provider said so.
    assert compute_backoff(0, jitter=0.0, max_s=10.0, retry_after_s=120.0) == 120.0
    # Jitter never takes the delay below it.
    assert compute_backoff(5, jitter=1.0, rand=lambda: 0.0, retry_after_s=5.0) == 5.0
    # A shorter retry_after does not shorten the backoff.
    assert compute_backoff(4, jitter=0.0, retry_after_s=1.0) == 16.0
    assert compute_backoff(4, jitter=0.0, retry_after_s=None) == 16.0


@pytest.mark.parametrize("attempt", [-1, -100])
def test_a_negative_attempt_is_refused(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt counts from 0"):
        compute_backoff(attempt)


@pytest.mark.parametrize("jitter", [-0.01, 1.01, 2.0, math.nan])
def test_a_jitter_outside_zero_to_one_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter is a fraction between 0 and 1"):
        compute_backoff(1, jitter=jitter)


def test_the_default_rand_keeps_the_delay_within_bounds() -> None:
    for _ in range(100):
        delay = compute_backoff(2)
        assert 2.0 <= delay < 4.0


def test_a_failure_streak_waits_longer_each_time_logs_sparingly_and_ends_on_success() -> None:
    from broadcasters.backoff import FailureStreak

    now = [1000.0]
    streak = FailureStreak(base_s=0.1, max_s=5.0, jitter=0.0, clock=lambda: now[0])
    assert streak.ready()
    logged = [n for n in range(1, 301) if streak.failed()]
    assert logged == [1, 10, 100, 200, 300], "the 1st, the 10th, then every 100th"
    assert not streak.ready(), "the next try waits"
    now[0] += 4.99
    assert not streak.ready(), "the wait grew to the 5 s cap"
    now[0] += 0.02
    assert streak.ready()
    streak.succeeded()
    assert streak.length == 0
    assert streak.failed(), "a new streak logs its first failure"
    now[0] += 0.11
    assert streak.ready(), "and waits the base delay again"
