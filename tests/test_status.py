"""The health report (``broadcasters/status.py``): counters, quota use and the projection of
when today's quota runs out, each expected number worked out by hand from what was recorded.

Time is a clock the test sets: 2023-11-14 22:00:00 UTC is 1_699_999_200; the next UTC
midnight (when daily quotas reset) is 1_700_006_400, two hours later.
"""

from __future__ import annotations

from support.clock import FakeClock

from broadcasters.backends import MemoryBackend
from broadcasters.state import Counts, FlagCause, SharedState
from broadcasters.status import HealthReport, PipelineHealth, build_report
from config import Settings, load_settings

TEN_PM = 1_699_999_200.0  # 2023-11-14 22:00:00 UTC
MIDNIGHT = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
QUOTA = 1000


def _settings() -> Settings:
    return load_settings(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s",
                         RELAYCAST_BROADCASTERS="pusher,log",
                         RELAYCAST_DAILY_QUOTA=str(QUOTA), RELAYCAST_HEALTH_INTERVAL_S="60")


def _state(clock: FakeClock) -> SharedState:
    return SharedState(MemoryBackend(clock=clock), clock=clock)


def _send(state: SharedState, clock: FakeClock, at: float, sent: int) -> None:
    """Record ``sent`` messages through pusher (one request) at ``at``."""
    now = clock.now
    clock.now = at
    state.record({"pusher": Counts(sent=sent, requests=1)})
    clock.now = now


def _report(state: SharedState, now: float) -> HealthReport:
    return build_report(_settings(), state, PipelineHealth(), active_broadcaster="pusher", now=now)


def _traffic(state: SharedState, clock: FakeClock, now: float) -> None:
    """300 messages ten hours ago (today, outside the last hour), then 100 at each of 45, 30
    and 15 minutes ago and now: 400 in the last hour, 700 today."""
    _send(state, clock, now - 10 * 3600, 300)
    for minutes_ago in (45, 30, 15, 0):
        _send(state, clock, now - minutes_ago * 60, 100)


def test_with_no_traffic_nothing_is_used_and_nothing_runs_out() -> None:
    clock = FakeClock(TEN_PM)
    report = _report(_state(clock), TEN_PM)
    pusher, log = report.broadcasters
    assert (pusher.usage_today, pusher.sent_last_hour, pusher.daily_quota) == (0, 0, QUOTA)
    assert (pusher.quota_used_fraction, pusher.quota_warning) == (0.0, False)
    assert pusher.quota_exhausted_at is None, "no rate: it never runs out"
    assert pusher.latency_p95_ms is None
    assert (log.daily_quota, log.quota_used_fraction, log.live) == (None, None, False)
    assert (report.problems, report.warnings, report.healthy) == ([], [], True)


def test_the_quota_runs_out_when_the_last_hours_rate_uses_up_what_is_left() -> None:
    clock = FakeClock(TEN_PM)
    state = _state(clock)
    _traffic(state, clock, TEN_PM)
    report = _report(state, TEN_PM)
    pusher = report.broadcasters[0]
    assert (pusher.usage_today, pusher.sent_last_hour, pusher.requests_last_hour) == (700, 400, 4)
    assert pusher.sent_interval == 100, "the last minute (a 60 s interval)"
    assert pusher.quota_used_fraction == 0.7
    assert pusher.quota_warning is False, "under 80 % used"
    # 300 left at 400 an hour: 300 / 400 * 3600 = 2700 s after 22:00, 22:45 (before midnight).
    assert pusher.quota_exhausted_at == TEN_PM + 2700
    assert report.warnings == [
        "pusher quota runs out at 2023-11-14 22:45:00Z at the current rate"]
    assert report.healthy is True, "a projection warns; it is not a problem yet"


def test_a_quota_that_would_run_out_after_midnight_resets_first() -> None:
    half_past_eleven = TEN_PM + 90 * 60  # 23:30
    clock = FakeClock(half_past_eleven)
    state = _state(clock)
    _traffic(state, clock, half_past_eleven)
    pusher = _report(state, half_past_eleven).broadcasters[0]
    assert (pusher.usage_today, pusher.sent_last_hour) == (700, 400)
    # 23:30 + 2700 s is 00:15, after the midnight reset (1_700_006_400): it does not run out.
    assert half_past_eleven + 2700 > MIDNIGHT
    assert pusher.quota_exhausted_at is None


def test_todays_usage_starts_again_at_midnight() -> None:
    clock = FakeClock(MIDNIGHT - 60)  # 23:59
    state = _state(clock)
    _send(state, clock, MIDNIGHT - 60, 900)
    before = _report(state, MIDNIGHT - 60).broadcasters[0]
    assert (before.usage_today, before.quota_warning) == (900, True)
    clock.now = MIDNIGHT + 60  # 00:01: a new UTC day
    after = _report(state, MIDNIGHT + 60).broadcasters[0]
    assert after.usage_today == 0
    assert after.sent_last_hour == 900, "the hour's counters do not reset at midnight"
    assert (after.quota_used_fraction, after.quota_warning) == (0.0, False)
    # 1000 left at 900 an hour: 1000 / 900 * 3600 = 4000 s after 00:01, long before the next
    # midnight.
    assert after.quota_exhausted_at == MIDNIGHT + 60 + 4000


def test_over_quota_is_exhausted_now_and_a_quota_flag_is_a_problem() -> None:
    clock = FakeClock(TEN_PM)
    state = _state(clock)
    _send(state, clock, TEN_PM - 5 * 3600, 1200)
    enabled = _report(state, TEN_PM)
    pusher = enabled.broadcasters[0]
    assert (pusher.usage_today, pusher.quota_used_fraction) == (1200, 1.2)
    assert pusher.quota_exhausted_at == TEN_PM, "already used up"
    assert enabled.warnings == ["pusher used 120% of its daily quota",
                                "pusher quota runs out at 2023-11-14 22:00:00Z at the current rate"]

    state.disable("pusher", "quota exceeded: Over quota", until=MIDNIGHT, cause=FlagCause.QUOTA)
    disabled = _report(state, TEN_PM)
    row = disabled.broadcasters[0]
    assert (row.state, row.until, row.cause) == ("disabled", MIDNIGHT, "quota")
    assert disabled.problems == ["pusher disabled: quota exceeded: Over quota"]
    assert disabled.warnings == ["pusher used 120% of its daily quota"], (
        "no projection for a broadcaster that is already off")
    assert disabled.healthy is False


def test_traffic_on_a_broadcaster_no_browser_receives_is_a_problem() -> None:
    clock = FakeClock(TEN_PM)
    report = build_report(_settings(), _state(clock), PipelineHealth(),
                          active_broadcaster="log", now=TEN_PM)
    assert report.problems == ["traffic is on log, which no browser receives: viewers fall back "
                               "to polling the history"]


def test_pipeline_backlog_and_losses_are_problems() -> None:
    clock = FakeClock(TEN_PM)
    pipeline = PipelineHealth(dead_lettered_interval=2, lines_dropped_interval=5,
                              oldest_unbroadcast_age_s=121.0, occupancy="unknown")
    report = build_report(_settings(), _state(clock), pipeline, active_broadcaster="pusher",
                          now=TEN_PM)
    # A line is stuck after max(60 s, two health intervals) = 120 s: 121 s is over.
    assert report.problems == ["2 batch(es) dead-lettered", "5 line(s) dropped by emitters",
                               "a line has waited 121s to be broadcast"]
    assert report.warnings == ["occupancy unknown (not reconciled recently): publishing every "
                               "run's lines"]
    not_yet = build_report(_settings(), _state(clock),
                           PipelineHealth(oldest_unbroadcast_age_s=120.0), now=TEN_PM)
    assert not_yet.problems == []
