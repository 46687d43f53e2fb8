"""The error taxonomy is decided by status code and body, never by exception class."""

from __future__ import annotations

import pytest

from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    BroadcastError,
    FlagAction,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TransientError,
    classify_http,
    parse_retry_after,
)


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


ALL = (QuotaExceeded, RateLimited, PayloadTooLarge, BadRequest, AuthFailed, TransientError)


def test_only_failures_of_the_message_itself_are_final() -> None:
    final = {cls.category for cls in ALL if not cls.retryable}
    assert final == {"too_large", "bad_request"}, "nothing is retried that cannot succeed"


def test_each_category_says_what_happens_to_its_broadcaster() -> None:
    actions = {cls.category: cls.flag for cls in ALL}
    assert actions == {"quota": FlagAction.UNTIL_RESET, "rate_limited": FlagAction.PAUSE,
                       "auth": FlagAction.UNTIL_ENABLED, "too_large": None,
                       "bad_request": None, "transient": None}


def test_retry_after_header_is_honoured_and_bounded() -> None:
    assert isinstance(error := classify_http(429, "", retry_after="7"), RateLimited)
    assert error.retry_after_s == 7.0
    assert parse_retry_after("junk", 1.5) == 1.5
    assert parse_retry_after(None, 2.0) == 2.0
    assert parse_retry_after("999999", 1.0) == 3600.0


def test_error_text_names_category_and_status() -> None:
    assert str(classify_http(403, "Over quota")) == "quota: HTTP 403: Over quota"
