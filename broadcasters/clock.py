"""UTC days: daily usage counters roll over, and quotas reset, at midnight UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def next_utc_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
