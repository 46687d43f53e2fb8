"""The error taxonomy is decided by status code and body, never by exception class; each
category leads the manager (with the real Pusher adapter, against a faulting HTTP server) to
retry or not, and to flag the broadcaster or not, as the category says."""

from __future__ import annotations

import pytest
from support.fault_server import FaultServer

from broadcasters.backends import MemoryBackend
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    BroadcastError,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TransientError,
    classify_http,
    parse_retry_after,
)
from broadcasters.factory import build_manager
from broadcasters.manager import BroadcasterManager
from broadcasters.packing import LogBatch
from broadcasters.state import BroadcasterState, FlagCause, SharedState
from config import load_settings


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, "Over quota", QuotaExceeded),
        (403, "", QuotaExceeded),
        (403, "Application disabled", AuthFailed),
        (402, "Payment required", QuotaExceeded),
        (413, "Message quota exceeded", QuotaExceeded),
        (413, "Request Entity Too Large", PayloadTooLarge),
        (429, "Too many requests", RateLimited),
        (401, "Invalid signature", AuthFailed),
        (400, "Invalid channel", BadRequest),
        (404, "Not found", BadRequest),
        (500, "Internal error", TransientError),
        (502, "Bad gateway", TransientError),
        (503, "", TransientError),
        (408, "Request timeout", TransientError),
    ],
)
def test_status_and_body_decide_the_category(
    status: int, body: str, expected: type[BroadcastError]
) -> None:
    error = classify_http(status, body)
    assert type(error) is expected
    assert error.status == status


def _pusher_manager(fault_server: FaultServer) -> BroadcasterManager:
    """The real Pusher adapter, alone, publishing to the fault server; state in memory."""
    settings = load_settings(PUSHER_APP_ID="1", PUSHER_KEY="app-key", PUSHER_SECRET="s",
                             **fault_server.env(), RELAYCAST_BROADCASTERS="pusher",
                             RELAYCAST_FLAG_CACHE_MS="0", RELAYCAST_PROVIDER_TIMEOUT_S="0.5")
    return build_manager(settings, SharedState(MemoryBackend()))


def _batch(run_id: str) -> LogBatch:
    return LogBatch(f"private-logs-{run_id}", run_id, [
        {"seq": 1, "ts": 1, "level": "info", "message": "line 1", "data": {}}])


@pytest.mark.parametrize(
    ("status", "body", "retried", "flag"),
    [
        (403, "Over quota", True, (BroadcasterState.DISABLED, FlagCause.QUOTA)),
        (401, "Invalid signature", True, (BroadcasterState.DISABLED, FlagCause.AUTH)),
        (429, "Too many requests", True, (BroadcasterState.PAUSED, FlagCause.RATE_LIMIT)),
        (503, "", True, None),
        (400, "Invalid channel", False, None),
        (413, "Request Entity Too Large", False, None),
    ],
    ids=["quota", "auth", "rate-limited", "transient", "bad-request", "too-large"],
)
def test_each_category_leads_the_manager_to_do_what_it_says(
    fault_server: FaultServer, status: int, body: str, retried: bool,
    flag: tuple[BroadcasterState, FlagCause] | None,
) -> None:
    fault_server.respond(status, body, times=1)
    manager = _pusher_manager(fault_server)
    try:
        report = manager.send([_batch("run-1")])
        if retried:  # it may pass: owed, for the task to retry
            assert (len(report.pending), report.failed) == (1, [])
        else:  # a failure of the message itself: final, never retried
            assert report.pending == []
            assert [m.seqs for m, _ in report.failed] == [(1, 1)]
        flags = manager.state.flags(["pusher"])
        assert ((flags["pusher"].kind, flags["pusher"].cause) if flags else None) == flag
        manager.send([_batch("run-2")])
        expected_requests = 1 if flag else 2
        assert fault_server.count("/apps/1/batch_events") == expected_requests, (
            "a flagged broadcaster gets no request; an unflagged one is tried again")
    finally:
        manager.close()


def test_retry_after_header_is_honoured_and_bounded() -> None:
    assert isinstance(error := classify_http(429, "", retry_after="7"), RateLimited)
    assert error.retry_after_s == 7.0
    assert parse_retry_after("junk", 1.5) == 1.5
    assert parse_retry_after(None, 2.0) == 2.0
    assert parse_retry_after("999999", 1.0) == 3600.0


def test_error_text_names_category_and_status() -> None:
    assert str(classify_http(403, "Over quota")) == "quota: HTTP 403: Over quota"
