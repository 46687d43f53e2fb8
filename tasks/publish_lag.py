"""The emit-to-publish histogram: how long each line delivered live waited since it was
emitted (its ``ts``) — the flush, the queue, the ordering gate and the provider's call.

Counted in the pipeline counters (:func:`broadcasters.keys.publish_lag_le`, one bucket per
bound of :data:`~broadcasters.histogram.PUBLISH_LAG_BUCKETS_MS`, and
:data:`~broadcasters.keys.PUBLISH_LAG_SUM_MS`), whose running totals ``GET /metrics``
exposes as ``relaycast_emit_to_publish_seconds``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from broadcasters import keys
from broadcasters.base import Message
from broadcasters.histogram import PUBLISH_LAG_BUCKETS_MS
from broadcasters.wire import RunLines, run_of_message_id

#: The counter of each bucket, by the bucket's index (the last: the open bucket, labelled as
#: :func:`~broadcasters.histogram.bucket_of` labels it).
_BUCKET_NAMES = [keys.publish_lag_le(bound) for bound in PUBLISH_LAG_BUCKETS_MS] + [
    keys.publish_lag_le(PUBLISH_LAG_BUCKETS_MS[-1] * 10)]


def _merged(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Seq ranges merged where they touch or overlap: (starts, ends), sorted."""
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted(spans):
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


def publish_lag_counts(runs: Iterable[RunLines], delivered: Iterable[Message], now_ms: float
                       ) -> dict[str, float]:
    """The pipeline counters of the lines of ``runs`` that ``delivered`` carried (each line
    once, however many broadcasters delivered it), as of ``now_ms``."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for message in delivered:
        if message.seqs is not None:
            spans.setdefault(run_of_message_id(message.id), []).append(message.seqs)
    if not spans:
        return {}
    covered = {run_id: _merged(ranges) for run_id, ranges in spans.items()}
    bounds = PUBLISH_LAG_BUCKETS_MS
    tally = [0] * len(_BUCKET_NAMES)
    total_ms = 0.0
    for run in runs:  # a batch holds each line once: (run, seq) is unique in SQL
        ranges = covered.get(run["run_id"])
        if ranges is None:
            continue
        starts, ends = ranges
        for line in run["events"]:
            seq = line["seq"]
            at = bisect_right(starts, seq) - 1
            if at < 0 or seq > ends[at]:
                continue
            lag_ms = max(0.0, now_ms - line["ts"])
            total_ms += lag_ms
            tally[bisect_left(bounds, lag_ms)] += 1
    counts: dict[str, float] = {name: n for name, n in zip(_BUCKET_NAMES, tally, strict=True)
                                if n}
    if counts:
        counts[keys.PUBLISH_LAG_SUM_MS] = round(total_ms, 3)
    return counts
