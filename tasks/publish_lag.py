"""The emit-to-publish histogram: how long each line delivered live waited since it was
emitted (its ``ts``) — the flush, the queue, the ordering gate and the provider's call.

Counted in the pipeline counters (:func:`broadcasters.keys.publish_lag_le`, one bucket per
bound of :data:`~broadcasters.histogram.PUBLISH_LAG_BUCKETS_MS`, and
:data:`~broadcasters.keys.PUBLISH_LAG_SUM_MS`), whose running totals ``GET /metrics``
exposes as ``relaycast_emit_to_publish_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable

from broadcasters import keys
from broadcasters.base import Message
from broadcasters.histogram import PUBLISH_LAG_BUCKETS_MS, bucket_of
from broadcasters.wire import RunLines, run_of_message_id


def publish_lag_counts(runs: Iterable[RunLines], delivered: Iterable[Message], now_ms: float
                       ) -> dict[str, float]:
    """The pipeline counters of the lines of ``runs`` that ``delivered`` carried (each line
    once, however many broadcasters delivered it), as of ``now_ms``."""
    stamps: dict[tuple[str, int], int] = {(run["run_id"], line["seq"]): line["ts"]
                                          for run in runs for line in run["events"]}
    seen: set[tuple[str, int]] = set()
    counts: dict[str, float] = {}
    total_ms = 0.0
    for message in delivered:
        if message.seqs is None:
            continue
        run_id = run_of_message_id(message.id)
        for seq in range(message.seqs[0], message.seqs[1] + 1):
            ts = stamps.get((run_id, seq))
            if ts is None or (run_id, seq) in seen:
                continue
            seen.add((run_id, seq))
            lag_ms = max(0.0, now_ms - ts)
            total_ms += lag_ms
            name = keys.publish_lag_le(bucket_of(lag_ms, PUBLISH_LAG_BUCKETS_MS))
            counts[name] = counts.get(name, 0) + 1
    if counts:
        counts[keys.PUBLISH_LAG_SUM_MS] = round(total_ms, 3)
    return counts
