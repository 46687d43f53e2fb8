"""Retry delays: a pure function, tested without sleeping (after dramatiq's compute_backoff)."""

from __future__ import annotations

import random
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
