"""One error taxonomy for every provider.

``BroadcastError`` is the root; each category says what the manager does next:

============== ================================================ ========= ====================
category       meaning                                          retryable the broadcaster is
============== ================================================ ========= ====================
quota          daily/monthly message quota spent (Pusher        yes       off for every worker
               403/402, Ably 40112)                                       until the reset
rate_limited   too many requests now (HTTP 429, Ably 4291x)     yes       paused for
                                                                          ``retry_after_s``
too_large      a message over the provider's size limit         no        left alone
bad_request    the provider refused the request as malformed    no        left alone
auth           credentials rejected or app disabled             yes       off until re-enabled
transient      5xx, timeouts, connection errors                 yes       left alone
============== ================================================ ========= ====================

The policy is carried by the classes and read by the code that acts on it
(:class:`~broadcasters.base.Broadcaster` and :class:`~broadcasters.manager.BroadcasterManager`):

* ``retryable``: could the message get through if sent again, later or by another
  broadcaster? ``False`` is final for that message (nothing is retried that cannot
  succeed); every other message of the request still goes. ``True`` means the failure is
  the provider's, not the message's: the call stops for that provider (one request finds
  out, not one per chunk), the next broadcaster is tried, and what nobody took is retried
  with backoff.
* ``flag``: what happens to the broadcaster for every worker (see :class:`FlagAction`).

Categories are decided from the status code and the body (see :func:`classify_http`),
never from the exception class a vendor library happens to raise: Pusher's over-quota
answer is a 403 like an app-disabled one, and Ably's account limit comes as HTTP 401.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class FlagAction(StrEnum):
    """What an error does to its broadcaster, for every worker."""

    #: Off until the provider's quota resets (UTC midnight, or ``RELAYCAST_QUOTA_DISABLE``).
    UNTIL_RESET = "until-reset"
    #: Off until an operator runs ``relaycast enable``.
    UNTIL_ENABLED = "until-enabled"
    #: Paused for the error's ``retry_after_s``.
    PAUSE = "pause"


class BroadcastError(Exception):
    """Root of every failure a broadcaster reports."""

    category: ClassVar[str] = "error"
    retryable: ClassVar[bool] = True
    flag: ClassVar[FlagAction | None] = None

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{self.category}: {prefix}{self.detail}"


class QuotaExceeded(BroadcastError):
    """The provider's message quota is spent; nothing more goes through until it resets."""

    category = "quota"
    flag = FlagAction.UNTIL_RESET


class RateLimited(BroadcastError):
    """Too many requests right now; ``retry_after_s`` says when to try again."""

    category = "rate_limited"
    flag = FlagAction.PAUSE

    def __init__(self, detail: str, *, retry_after_s: float, status: int | None = None) -> None:
        super().__init__(detail, status=status)
        self.retry_after_s = retry_after_s


class PayloadTooLarge(BroadcastError):
    """A message exceeds the provider's size limit even after splitting."""

    category = "too_large"
    retryable = False


class BadRequest(BroadcastError):
    """The provider refused the request as malformed; sending it again cannot help."""

    category = "bad_request"
    retryable = False


class AuthFailed(BroadcastError):
    """Credentials rejected (or the app disabled): stop until an operator re-enables."""

    category = "auth"
    flag = FlagAction.UNTIL_ENABLED


class TransientError(BroadcastError):
    """Server errors, timeouts and connection failures: worth retrying with backoff."""

    category = "transient"


CATEGORIES: tuple[str, ...] = tuple(
    cls.category
    for cls in (QuotaExceeded, RateLimited, PayloadTooLarge, BadRequest, AuthFailed, TransientError)
)

_QUOTA_WORDS = ("quota", "limit exceeded", "message limit", "over limit")
_DISABLED_WORDS = ("disabled", "not enabled", "suspended")


def parse_retry_after(value: str | None, default_s: float) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds form); ``default_s`` otherwise."""
    if value:
        try:
            seconds = float(value.strip())
        except ValueError:
            return default_s
        if seconds >= 0:
            return min(seconds, 3600.0)
    return default_s


def classify_http(
    status: int,
    body: str,
    *,
    retry_after: str | None = None,
    default_retry_after_s: float = 1.0,
) -> BroadcastError:
    """Map an HTTP answer from a Pusher-protocol server to the taxonomy.

    403 is quota unless the body says the app is disabled: Pusher answers 403 both when
    the daily quota is spent and when the app is disabled, and treating an unknown 403 as
    quota stops traffic until the next reset instead of hammering the API (one request a
    day finds out again). 402 and a 413 that mentions the quota are quota too.
    """
    text = (body or "").strip()[:300]
    lowered = text.lower()
    if status in (402, 403):
        if status == 403 and any(word in lowered for word in _DISABLED_WORDS):
            return AuthFailed(text or "app disabled", status=status)
        return QuotaExceeded(text or "over quota", status=status)
    if status == 413:
        if any(word in lowered for word in _QUOTA_WORDS):
            return QuotaExceeded(text, status=status)
        return PayloadTooLarge(text or "payload too large", status=status)
    if status == 429:
        return RateLimited(
            text or "rate limited",
            retry_after_s=parse_retry_after(retry_after, default_retry_after_s),
            status=status,
        )
    if status == 401:
        return AuthFailed(text or "credentials rejected", status=status)
    if status in (408, 425) or status >= 500:
        return TransientError(text or "server error", status=status)
    return BadRequest(text or "bad request", status=status)
