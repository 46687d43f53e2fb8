"""A snapshot of every broadcaster's state, for ``relaycast status`` and the health report."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from broadcasters.state import SharedState
from config import Settings


class BroadcasterStatus(BaseModel):
    name: str
    state: str  # "enabled", "disabled" or "paused"
    reason: str | None = None
    since: float | None = None
    until: float | None = None
    set_by: str | None = None
    sent_last_hour: int = 0
    requests_last_hour: int = 0
    skipped_last_hour: int = 0
    failed_last_hour: dict[str, int] = {}
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    usage_today: int = 0
    daily_quota: int | None = None


class StatusSnapshot(BaseModel):
    generated_at: float
    state_backend: str
    state_errors: int
    broadcasters: list[BroadcasterStatus]

    @property
    def healthy(self) -> bool:
        return self.state_errors == 0 and all(b.state == "enabled" for b in self.broadcasters)


def snapshot(settings: Settings, state: SharedState) -> StatusSnapshot:
    names = settings.broadcaster_order
    flags = state.flags(names)
    rows = []
    for name in names:
        flag = flags.get(name)
        counts = state.counts(name, minutes=60)
        row = BroadcasterStatus(
            name=name,
            state=flag.kind if flag else "enabled",
            reason=flag.reason if flag else None,
            since=flag.since if flag else None,
            until=flag.until if flag else None,
            set_by=flag.set_by if flag else None,
            sent_last_hour=counts.sent,
            requests_last_hour=counts.requests,
            skipped_last_hour=counts.skipped,
            failed_last_hour=dict(counts.failed),
            latency_p50_ms=counts.latency_percentile_ms(0.50),
            latency_p95_ms=counts.latency_percentile_ms(0.95),
            usage_today=state.usage_today(name)["messages"],
            daily_quota=settings.daily_quota if name == "pusher" else None,
        )
        rows.append(row)
    return StatusSnapshot(generated_at=time.time(), state_backend=state.backend_name,
                          state_errors=state.store_errors, broadcasters=rows)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "re-enabled"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_table(snap: StatusSnapshot) -> str:
    header = ("broadcaster", "state", "sent/1h", "failed/1h", "p95 ms", "today", "until", "reason")
    table: list[tuple[str, ...]] = [header]
    for row in snap.broadcasters:
        failed = ",".join(f"{k}={v}" for k, v in sorted(row.failed_last_hour.items())) or "0"
        today = f"{row.usage_today}/{row.daily_quota}" if row.daily_quota else str(row.usage_today)
        p95 = "-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:g}"
        until = _when(row.until) if row.state != "enabled" else "-"
        table.append((row.name, row.state, str(row.sent_last_hour), failed, p95, today, until,
                      row.reason or ""))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in table]
    verdict = "healthy" if snap.healthy else "degraded"
    extra = ""
    if snap.state_backend == "memory":
        extra = " (state in memory: this process only; set REDIS_URL to share it)"
    if snap.state_errors:
        extra += f" (shared state unreachable: {snap.state_errors} error(s))"
    return "\n".join([*lines, f"overall: {verdict}{extra}"])


def to_json(snap: StatusSnapshot) -> dict[str, Any]:
    return {**snap.model_dump(), "healthy": snap.healthy}
