"""Retry delays: a pure function, tested without sleeping (after dramatiq's compute_backoff)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


def compute_backoff(
    attempt: int,
    *,
    base_s: float = 1.0,
    factor: float = 2.0,
    max_s: float = 60.0,
    jitter: float = 0.5,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Exponential (``base_s * factor**attempt``) capped at ``max_s``; the last ``jitter``
    fraction of it is random so workers that failed together do not retry together; never
    shorter than a provider's ``retry_after_s``.
    """
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    if not (base_s > 0 and max_s > 0 and factor >= 1):
        raise ValueError("base_s and max_s must be positive and factor at least 1")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter is a fraction between 0 and 1")
    delay = min(max_s, base_s * factor ** min(attempt, 64))
    delay = delay * (1.0 - jitter) + delay * jitter * rand()
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class FailureStreak:
    """Consecutive failures of one thing a loop keeps trying (SQL, the broker): when the next
    try is due (:func:`compute_backoff` from the streak's length), and which failures are
    worth a log line (the 1st, the 10th, then every 100th), so an outage neither hammers the
    server nor floods the log."""

    def __init__(self, *, base_s: float = 0.1, max_s: float = 5.0, jitter: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.jitter = jitter
        self._clock = clock
        #: Failures since the last success.
        self.length = 0
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Is the next try due?"""
        return self._clock() >= self._retry_at

    def failed(self) -> bool:
        """Count a failure and wait before the next try; True when it is worth logging."""
        self.length += 1
        self._retry_at = self._clock() + compute_backoff(
            self.length - 1, base_s=self.base_s, max_s=self.max_s, jitter=self.jitter)
        return self.length in (1, 10) or self.length % 100 == 0

    def succeeded(self) -> None:
        self.length = 0
        self._retry_at = 0.0
