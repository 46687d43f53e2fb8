"""Counters of a broadcaster as values: :class:`Counts` (sent, requests, skipped, failures per
category, a latency histogram) and :class:`Outcome` (when it last delivered and failed).

A minute bucket is stored as one hash (``stats:{name}:{minute}``) whose fields are named in
:mod:`broadcasters.keys`: :meth:`Counts.fields` writes them, :meth:`Counts.add_table` reads
them back. Counters expire after two hours, daily usage after two days, outcomes after a day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from broadcasters import keys
from broadcasters.errors import CATEGORIES
from broadcasters.histogram import LATENCY_BUCKETS_MS, bucket_of, bucket_percentile

COUNTER_TTL_S = 2 * 3600
USAGE_TTL_S = 2 * 86400
OUTCOME_TTL_S = 86400
#: Running totals (``totals:{stem}``) expire this long after their last write: a deployment
#: idle for a month starts its counters again (a counter reset, as Prometheus knows them).
TOTALS_TTL_S = 30 * 86400


@dataclass
class Counts:
    """Counters of one broadcaster over a window."""

    sent: int = 0
    requests: int = 0
    skipped: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latency_buckets: dict[int, int] = field(default_factory=dict)
    latency_sum_ms: float = 0.0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def latency_percentile_ms(self, fraction: float) -> float | None:
        """Upper bound of the bucket holding the ``fraction`` percentile (None: no requests)."""
        return bucket_percentile(self.latency_buckets, fraction)

    @classmethod
    def of(cls, tables: Iterable[Mapping[str, str]]) -> Counts:
        """The sum of minute buckets as stored."""
        total = cls()
        for table in tables:
            total.add_table(table)
        return total

    def add_table(self, table: Mapping[str, str]) -> None:
        """Add one minute bucket as stored (``sent``, ``failed:quota``, ``lat:50``, ...)."""
        for key, raw in table.items():
            value = float(raw)
            if key == keys.StatField.SENT:
                self.sent += int(value)
            elif key == keys.StatField.REQUESTS:
                self.requests += int(value)
            elif key == keys.StatField.SKIPPED:
                self.skipped += int(value)
            elif key == keys.StatField.LATENCY_SUM_MS:
                self.latency_sum_ms += value
            elif key.startswith(keys.FAILED):
                category = key.removeprefix(keys.FAILED)
                self.failed[category] = self.failed.get(category, 0) + int(value)
            elif key.startswith(keys.LATENCY):
                bound = int(key.removeprefix(keys.LATENCY))
                self.latency_buckets[bound] = self.latency_buckets.get(bound, 0) + int(value)

    def fields(self) -> dict[str, float]:
        """These counts as a minute bucket's fields to add (zeros left out)."""
        fields: dict[str, float] = {}
        for name, value in ((keys.StatField.SENT, self.sent),
                            (keys.StatField.REQUESTS, self.requests),
                            (keys.StatField.SKIPPED, self.skipped)):
            if value:
                fields[name] = value
        for category, value in self.failed.items():
            if value:
                fields[keys.failed(category)] = value
        for bound, value in self.latency_buckets.items():
            fields[keys.latency(bound)] = value
        if self.latency_sum_ms:
            fields[keys.StatField.LATENCY_SUM_MS] = round(self.latency_sum_ms, 3)
        return fields

    def usage_fields(self) -> dict[str, float]:
        """These counts as the day's usage fields to add (nothing without a send)."""
        if not (self.sent or self.requests):
            return {}
        return {keys.UsageField.MESSAGES: self.sent, keys.UsageField.REQUESTS: self.requests}


@dataclass(frozen=True)
class Outcome:
    """A broadcaster's latest result: when it last delivered, when it last failed, and why."""

    ok_at: float | None = None
    error_at: float | None = None
    error: str | None = None

    def failing_since(self, now: float, within_s: float) -> float | None:
        """When its current run of failures began, if its latest call failed within ``within_s``."""
        if self.error_at is None or now - self.error_at > within_s:
            return None
        if self.ok_at is not None and self.ok_at >= self.error_at:
            return None
        return self.error_at

    @classmethod
    def of(cls, table: Mapping[str, str]) -> Outcome:
        """The outcome as stored (``outcome:{name}``)."""
        ok_at, error_at = table.get(keys.OutcomeField.OK_AT), table.get(keys.OutcomeField.ERROR_AT)
        return cls(ok_at=float(ok_at) if ok_at is not None else None,
                   error_at=float(error_at) if error_at is not None else None,
                   error=table.get(keys.OutcomeField.ERROR))


def counts_from_send(latencies_ms: Sequence[float], sent: int, failed: Mapping[str, int],
                     skipped: int = 0) -> Counts:
    buckets: dict[int, int] = {}
    for latency in latencies_ms:
        bound = bucket_of(latency, LATENCY_BUCKETS_MS)
        buckets[bound] = buckets.get(bound, 0) + 1
    return Counts(sent=sent, requests=len(latencies_ms), skipped=skipped,
                  failed={c: n for c, n in failed.items() if n and c in CATEGORIES},
                  latency_buckets=buckets, latency_sum_ms=sum(latencies_ms))


def sent_series(tables: Sequence[Mapping[str, str]], minutes: int) -> list[int]:
    """Messages sent in each of ``minutes`` minute buckets (zeros when they were not read)."""
    if len(tables) != minutes:
        return [0] * minutes
    return [int(float(table.get(keys.StatField.SENT, 0))) for table in tables]
