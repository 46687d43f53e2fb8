"""The manager's policy, with scripted stub broadcasters over both state backends.

The provider adapters themselves are tested against soketi and a faulting HTTP server
(test_pusher_*.py); here the stub (a test double, ``tests/support/stub.py``) stands in for
a provider so every branch of the policy can be driven exactly. Time is a clock the test
moves (``clock=`` on the manager and the state, ``monotonic=`` for the flag cache), so no
test sleeps.
"""

from __future__ import annotations

import json
import time

from support.clock import FakeClock
from support.stub import StubBroadcaster

from broadcasters.base import Message
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from broadcasters.manager import BroadcasterManager, traffic_carrier
from broadcasters.packing import LogBatch
from broadcasters.state import SharedState


def _batch(n: int = 50, run_id: str = "run-1", text: str = "line") -> LogBatch:
    return LogBatch(f"private-logs-{run_id}", run_id, [
        {"seq": i, "ts": i, "level": "info", "message": f"{text} {i}", "data": {}}
        for i in range(1, n + 1)
    ])


def _seqs(messages: list[Message]) -> list[int]:
    return [e["seq"] for m in messages for e in json.loads(m.payload)["events"]]


def _manager(state: SharedState, *stubs: StubBroadcaster, **kw: object) -> BroadcasterManager:
    return BroadcasterManager(list(stubs), state, flag_cache_ms=0, **kw)  # type: ignore[arg-type]


def _on_clock(state: SharedState, clock: FakeClock) -> SharedState:
    """The same store, telling time by ``clock`` (flags' since/until, and whether they hold)."""
    return SharedState(state.backend, clock=clock)


def test_quota_flags_the_broadcaster_and_the_next_one_delivers(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("ably")
    first.fail_always(QuotaExceeded("over quota", status=403))
    manager = _manager(shared_state, first, second)
    report = manager.send([_batch(100)])
    assert report.pending == []
    assert _seqs(second.sent) == list(range(1, 101))
    assert first.requests == 1, "a spent quota costs one request, not one per chunk"
    flag = shared_state.flags(["pusher"])["pusher"]
    assert flag.reason.startswith("quota exceeded")
    assert flag.until is not None and flag.until > time.time() + 1
    report = manager.send([_batch(10, "run-2")])
    assert first.requests == 1, "a flagged broadcaster gets no request"
    assert "pusher" in report.skipped
    assert {name for _, name in report.delivered} == {"ably"}
    assert _seqs(second.sent)[100:] == list(range(1, 11))


def test_quota_disable_duration_is_configurable(shared_state: SharedState) -> None:
    clock = FakeClock()
    state = _on_clock(shared_state, clock)
    first = StubBroadcaster("pusher")
    first.fail_next(QuotaExceeded("over quota"))
    manager = _manager(state, first, StubBroadcaster("log"), quota_disable_s=60, clock=clock)
    manager.send([_batch(5)])
    assert state.flags(["pusher"])["pusher"].until == clock.now + 60
    clock.advance(59)
    manager.send([_batch(5, "run-2")])
    assert first.requests == 1, "still off a second before the configured end"
    clock.advance(2)
    manager.send([_batch(5, "run-3")])
    assert first.requests == 2
    assert _seqs(first.sent) == list(range(1, 6))


def test_auth_failure_disables_until_re_enabled(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(AuthFailed("invalid signature", status=401))
    manager = _manager(shared_state, first, second)
    manager.send([_batch(5)])
    flag = shared_state.flags(["pusher"])["pusher"]
    assert (flag.reason, flag.until) == ("credentials rejected", None)
    shared_state.enable("pusher")
    manager.send([_batch(5, "run-2")])
    assert len(first.sent) == 1


def test_rate_limit_pauses_for_retry_after_and_moves_on(shared_state: SharedState) -> None:
    clock = FakeClock()
    state = _on_clock(shared_state, clock)
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(RateLimited("slow down", retry_after_s=30, status=429))
    manager = _manager(state, first, second, clock=clock)
    report = manager.send([_batch(5)])
    assert _seqs(second.sent) == [1, 2, 3, 4, 5]
    paused = state.flags(["pusher"])["pusher"]
    assert (paused.kind, paused.until) == ("paused", clock.now + 30)
    assert report.retry_after_s == 30
    clock.advance(29)
    manager.send([_batch(5, "run-2")])
    assert first.requests == 1, "paused for the whole retry-after"
    clock.advance(2)
    manager.send([_batch(5, "run-3")])
    assert len(first.sent) == 1


def test_transient_failure_everywhere_is_reported_for_retry(shared_state: SharedState) -> None:
    only = StubBroadcaster("pusher")
    only.fail_next(TransientError("502 bad gateway", status=502))
    manager = _manager(shared_state, only)
    report = manager.send([_batch(30)])
    assert _seqs(report.pending) == list(range(1, 31))
    assert all(e.category == "transient" for e in report.pending_errors.values())
    assert shared_state.flags(["pusher"]) == {}, "a transient failure sets no flag"
    retry = manager.send(report.pending)
    assert retry.pending == []
    assert _seqs(only.sent) == list(range(1, 31))


def test_bad_request_is_final_and_not_passed_on(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(BadRequest("invalid channel", status=400))
    report = _manager(shared_state, first, second).send([_batch(5)])
    assert report.pending == []
    assert [e.category for _, e in report.failed] == ["bad_request"]
    assert second.sent == []


def test_everything_flagged_means_retry_later(shared_state: SharedState) -> None:
    clock = FakeClock()
    state = _on_clock(shared_state, clock)
    state.disable("pusher", "maintenance", until=clock.now + 60)
    clock.advance(15)
    only = StubBroadcaster("pusher")
    report = _manager(state, only, clock=clock).send([_batch(3)])
    assert only.requests == 0
    assert _seqs(report.pending) == [1, 2, 3]
    assert report.next_chance_s == 60 - 15
    assert "maintenance" in str(next(iter(report.pending_errors.values())))


def test_messages_are_split_for_each_providers_size_limit(shared_state: SharedState) -> None:
    small = StubBroadcaster("pusher", max_message_bytes=1_000)
    small.fail_next(None, QuotaExceeded("over quota"))
    large = StubBroadcaster("ably", max_message_bytes=64_000)
    report = _manager(shared_state, small, large).send([_batch(200)])
    assert all(m.size_bytes <= 1_000 for m in small.sent)
    assert len(small.sent) == 10, "the first request of ten messages went through"
    assert _seqs(small.sent) + _seqs(large.sent) == list(range(1, 201))
    assert {b for _, b in report.delivered} == {"pusher", "ably"}


def test_counters_record_every_broadcaster_touched(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(TransientError("timeout"))
    _manager(shared_state, first, second).send([_batch(5)])
    assert shared_state.counts("pusher").failed == {"transient": 1}
    assert shared_state.counts("log").sent == 1
    assert shared_state.usage_today("log")["messages"] == 1


def test_flags_are_read_once_per_cache_window(shared_state: SharedState) -> None:
    ticks = FakeClock(0.0)
    stub = StubBroadcaster("pusher")
    manager = BroadcasterManager([stub, StubBroadcaster("log")], shared_state,
                                 flag_cache_ms=60_000, monotonic=ticks)
    manager.send([_batch(1)])
    shared_state.disable("pusher", "set elsewhere", until=time.time() + 3600)
    ticks.advance(59.5)
    manager.send([_batch(1, "run-2")])
    assert stub.requests == 2, "within the cache window the old flags are used"
    ticks.advance(0.5)
    manager.send([_batch(1, "run-3")])
    assert stub.requests == 2, "once the window is over, the flag set elsewhere is seen"


# Live and non-live broadcasters ------------------------------------------------------------------


def test_lines_only_log_took_are_still_owed_to_the_live_broadcaster(
        shared_state: SharedState) -> None:
    pusher, log = StubBroadcaster("pusher"), StubBroadcaster("log", live=False)
    pusher.fail_next(TransientError("connection refused"))
    manager = _manager(shared_state, pusher, log)
    report = manager.send([_batch(20)])
    assert _seqs(log.sent) == list(range(1, 21)), "log wrote them, for operators"
    assert report.delivered == [], "but no browser received them"
    assert {m.id for m, _ in report.logged} == {m.id for m in report.pending}
    assert _seqs(report.pending) == list(range(1, 21))
    assert report.next_chance_s == 0.0, "a transient failure is worth retrying at once"
    retry = manager.send(report.pending, live_only=True)
    assert retry.pending == []
    assert len(log.sent) == len(report.logged), "a retry does not write to log again"
    assert [name for _, name in retry.delivered] == ["pusher"] * len(retry.delivered)


def test_with_no_live_broadcaster_configured_log_is_final(shared_state: SharedState) -> None:
    log = StubBroadcaster("log", live=False)
    report = _manager(shared_state, log).send([_batch(5)])
    assert report.pending == []
    assert [name for _, name in report.delivered] == ["log"]
    assert report.logged == []


def test_when_every_live_broadcaster_is_off_until_later_no_retry_can_help(
        shared_state: SharedState) -> None:
    clock = FakeClock()
    state = _on_clock(shared_state, clock)
    state.disable("pusher", "maintenance", until=None)
    pusher, log = StubBroadcaster("pusher"), StubBroadcaster("log", live=False)
    report = _manager(state, pusher, log, clock=clock).send([_batch(5)])
    assert pusher.requests == 0
    assert _seqs(report.pending) == [1, 2, 3, 4, 5], "log took them; a live one is owed"
    assert report.next_chance_s is None, "off until an operator re-enables it"
    state.enable("pusher")
    state.pause("pusher", 30, "rate limited")
    clock.advance(10)
    report = _manager(state, pusher, log, clock=clock).send([_batch(5, "run-2")])
    assert report.next_chance_s == 30 - 10, "a pause ends by itself"


def test_a_change_of_carrier_is_announced_once_for_every_worker(shared_state: SharedState) -> None:
    first_worker = [StubBroadcaster("pusher"), StubBroadcaster("log", live=False)]
    second_worker = [StubBroadcaster("pusher"), StubBroadcaster("log", live=False)]
    a = _manager(shared_state, *first_worker, control_channel="private-admin-events")
    b = _manager(shared_state, *second_worker, control_channel="private-admin-events")
    a.send([_batch(2)])
    b.send([_batch(2, "run-2")])
    shared_state.disable("pusher", "disabled by an operator", until=None, set_by="relaycast-cli")
    a.send([_batch(2, "run-3")])
    b.send([_batch(2, "run-4")])
    sent = [m for stub in first_worker + second_worker for m in stub.sent]
    changes = [json.loads(m.payload) for m in sent if m.event == "provider-changed"]
    assert len(changes) == 2, "once, on log and on pusher (which still works: an operator)"
    assert {(c["from"], c["to"], c["live"]) for c in changes} == {("pusher", "log", False)}
    assert changes[0]["reason"] == "disabled by an operator"
    announced_on_pusher = [m for m in first_worker[0].sent + second_worker[0].sent
                           if m.event == "provider-changed"]
    assert len(announced_on_pusher) == 1, "browsers on Pusher hear that they must switch"


def test_a_quota_stop_is_not_announced_on_the_provider_that_ran_out(
        shared_state: SharedState) -> None:
    pusher, log = StubBroadcaster("pusher"), StubBroadcaster("log", live=False)
    manager = _manager(shared_state, pusher, log, control_channel="private-admin-events")
    manager.send([_batch(2)])
    pusher.fail_always(QuotaExceeded("over quota", status=403))
    manager.send([_batch(2, "run-2")])
    assert pusher.requests == 2, "one request found out; none was spent on the announcement"
    assert [m.event for m in log.sent if m.event != "log"] == ["provider-changed"]


def test_an_item_that_cannot_be_encoded_fails_alone(shared_state: SharedState) -> None:
    stub = StubBroadcaster("pusher")
    broken = LogBatch("private-logs-run-2", "run-2", [{"ts": 1, "level": "info",
                                                       "message": "no seq", "data": {}}])
    report = _manager(shared_state, stub).send([_batch(3), broken, _batch(2, "run-3")])
    assert _seqs(stub.sent) == [1, 2, 3, 1, 2]
    assert [e.category for _, e in report.failed] == ["bad_request"]


def test_a_lone_surrogate_never_stops_a_message(shared_state: SharedState) -> None:
    stub = StubBroadcaster("pusher")
    batch = _batch(3, text="report-\udcff.csv")
    report = _manager(shared_state, stub).send([batch])
    assert report.pending == [] and report.failed == []
    assert _seqs(stub.sent) == [1, 2, 3]
    assert "report-\ufffd.csv 1" in stub.sent[0].payload


def test_the_carrier_named_for_browsers_is_where_the_managers_next_send_goes(
        shared_state: SharedState) -> None:
    pusher, ably, log = StubBroadcaster("pusher"), StubBroadcaster("ably"), StubBroadcaster(
        "log", live=False)
    manager = _manager(shared_state, pusher, ably, log)
    names = manager.names
    assert traffic_carrier(names, {}, shared_state.active(), manager.is_live) == "pusher"
    for off, then in (("pusher", "ably"), ("ably", "log")):
        shared_state.disable(off, "switched off by the test", until=None)
        named = traffic_carrier(names, shared_state.flags(names), shared_state.active(),
                                manager.is_live)
        manager.send([_batch(3, f"run-{off}")])
        assert (named, shared_state.active()) == (then, then)
