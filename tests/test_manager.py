"""The manager's policy, with scripted stub broadcasters over both state backends.

The provider adapters themselves are tested against soketi and a faulting HTTP server
(test_pusher_*.py); here the stub stands in for a provider so every branch of the
policy can be driven exactly.
"""

from __future__ import annotations

import json
import time

from broadcasters.base import Message
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from broadcasters.manager import BroadcasterManager
from broadcasters.packing import LogBatch
from broadcasters.state import SharedState
from broadcasters.stub import StubBroadcaster


def _batch(n: int = 50, run_id: str = "run-1", text: str = "line") -> LogBatch:
    return LogBatch(f"private-logs-{run_id}", run_id, [
        {"seq": i, "ts": i, "level": "info", "message": f"{text} {i}", "data": {}}
        for i in range(1, n + 1)
    ])


def _seqs(messages: list[Message]) -> list[int]:
    return [e["seq"] for m in messages for e in json.loads(m.payload)["events"]]


def _manager(state: SharedState, *stubs: StubBroadcaster, **kw: object) -> BroadcasterManager:
    return BroadcasterManager(list(stubs), state, flag_cache_ms=0, **kw)  # type: ignore[arg-type]


def test_quota_flags_the_broadcaster_and_the_next_one_delivers(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("ably")
    first.fail_always(QuotaExceeded("over quota", status=403))
    manager = _manager(shared_state, first, second)
    report = manager.send([_batch(100)])
    assert not report.should_retry
    assert _seqs(second.sent) == list(range(1, 101))
    assert first.requests == 1, "a spent quota costs one request, not one per chunk"
    flag = shared_state.flags(["pusher"])["pusher"]
    assert flag.reason.startswith("quota exceeded")
    assert flag.until is not None and flag.until > time.time() + 1
    report = manager.send([_batch(10, "run-2")])
    assert first.requests == 1, "a flagged broadcaster gets no request"
    assert "pusher" in report.skipped
    assert manager.last_delivered_by == "ably"


def test_quota_disable_duration_is_configurable(shared_state: SharedState) -> None:
    first = StubBroadcaster("pusher")
    first.fail_next(QuotaExceeded("over quota"))
    manager = _manager(shared_state, first, StubBroadcaster("log"), quota_disable_s=0.3)
    manager.send([_batch(5)])
    assert "pusher" in shared_state.flags(["pusher"])
    time.sleep(0.5)
    manager.send([_batch(5, "run-2")])
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
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(RateLimited("slow down", retry_after_s=0.4, status=429))
    manager = _manager(shared_state, first, second)
    report = manager.send([_batch(5)])
    assert _seqs(second.sent) == [1, 2, 3, 4, 5]
    assert shared_state.flags(["pusher"])["pusher"].kind == "paused"
    assert report.retry_after_s == 0.4
    time.sleep(0.5)
    manager.send([_batch(5, "run-2")])
    assert len(first.sent) == 1


def test_transient_failure_everywhere_is_reported_for_retry(shared_state: SharedState) -> None:
    only = StubBroadcaster("pusher")
    only.fail_next(TransientError("502 bad gateway", status=502))
    manager = _manager(shared_state, only)
    report = manager.send([_batch(30)])
    assert report.should_retry
    assert _seqs(report.pending) == list(range(1, 31))
    assert all(e.category == "transient" for e in report.pending_errors.values())
    assert shared_state.flags(["pusher"]) == {}, "a transient failure sets no flag"
    retry = manager.send(report.pending)
    assert not retry.should_retry
    assert _seqs(only.sent) == list(range(1, 31))


def test_bad_request_is_final_and_not_passed_on(shared_state: SharedState) -> None:
    first, second = StubBroadcaster("pusher"), StubBroadcaster("log")
    first.fail_next(BadRequest("invalid channel", status=400))
    report = _manager(shared_state, first, second).send([_batch(5)])
    assert not report.should_retry
    assert [e.category for _, e in report.failed] == ["bad_request"]
    assert second.sent == []


def test_everything_flagged_means_retry_later(shared_state: SharedState) -> None:
    shared_state.disable("pusher", "maintenance", until=time.time() + 60)
    only = StubBroadcaster("pusher")
    report = _manager(shared_state, only).send([_batch(3)])
    assert only.requests == 0
    assert report.should_retry
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
    stub = StubBroadcaster("pusher")
    manager = BroadcasterManager([stub, StubBroadcaster("log")], shared_state, flag_cache_ms=60_000)
    manager.send([_batch(1)])
    shared_state.disable("pusher", "set elsewhere", until=time.time() + 60)
    manager.send([_batch(1, "run-2")])
    assert stub.requests == 2, "within the cache window the old flags are used"
    manager.invalidate_flags()
    manager.send([_batch(1, "run-3")])
    assert stub.requests == 2
