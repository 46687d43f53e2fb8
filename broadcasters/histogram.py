"""Histogram bucket maths: counts kept per upper bound (latency in the broadcaster counters,
the ordering gate's waits in the pipeline counters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Latency histogram bucket upper bounds, milliseconds (the last bucket is open).
LATENCY_BUCKETS_MS = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Emit-to-publish histogram bucket upper bounds, milliseconds (the last bucket is open): from
#: a line's timestamp to its delivery by a live broadcaster (flush, queue, gate and provider).
PUBLISH_LAG_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


def bucket_of(value: float, bounds: Sequence[int]) -> int:
    """The histogram bucket of ``value``: the first upper bound at or above it (past the last
    bound, an open bucket labelled ten times the last)."""
    for bound in bounds:
        if value <= bound:
            return bound
    return bounds[-1] * 10


def bucket_percentile(buckets: Mapping[int, int], fraction: float) -> float | None:
    """Upper bound of the bucket holding the ``fraction`` percentile of a histogram (counts
    per upper bound); None when it is empty."""
    total = sum(buckets.values())
    if total == 0:
        return None
    seen = 0
    for bound in sorted(buckets):
        seen += buckets[bound]
        if seen >= fraction * total:
            return float(bound)
    return float(max(buckets))
