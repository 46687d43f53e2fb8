"""SQL models: every log line (the source of truth), each run's line counter, workflow runs,
and the health report history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broadcasters.wire import MAX_RUN_ID_CHARS, LineEvent


class LineState(StrEnum):
    """Where a stored line stands with the broadcasters."""

    #: Stored; not yet delivered live (in flight, retrying, or waiting for the sweeper).
    PENDING = "pending"
    #: Delivered by a live broadcaster (Pusher, Ably, Socket.IO).
    SENT = "sent"
    #: Taken only by a non-live broadcaster (``log``): no browser got it live.
    LOGGED = "logged"
    #: Not published because nobody watched its channel (occupancy gating).
    SKIPPED = "skipped"
    #: Dead-lettered: retries ran out, or it can never be sent (``relaycast replay``).
    FAILED = "failed"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Its task died with its worker (SIGKILL, OOM, host lost): no heartbeat from any process
    #: running it for ``RELAYCAST_RUN_LOST_AFTER_S`` (the ``relaycast.runs_lost`` beat task,
    #: :mod:`tasks.lost`). Terminal, except that a real end recorded later wins (the task was
    #: alive after all: ``finished``/``failed`` follows ``lost``).
    LOST = "lost"


_BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_log_lines_run_seq"),
        Index("ix_log_lines_state_ts", "broadcast_state", "ts"),
        Index("ix_log_lines_ts", "ts"),  # retention (workflows.retention)
    )

    id: Mapped[int] = mapped_column(_BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(MAX_RUN_ID_CHARS))
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch milliseconds
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    broadcast_state: Mapped[str] = mapped_column(String(10), default=LineState.PENDING)
    broadcaster: Mapped[str | None] = mapped_column(String(20), nullable=True)
    #: When the sweeper last re-enqueued this (still pending) line, epoch ms.
    swept_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    def event(self) -> LineEvent:
        """The line as browsers receive it and the history endpoint returns it."""
        return {"seq": self.seq, "ts": self.ts, "level": self.level, "message": self.message,
                "data": self.data}

    def text(self, time_format: str = "%H:%M:%S", zone: str = "") -> str:
        """The line as people read it: seq, UTC time (``time_format``, then milliseconds and
        ``zone``), level, message and its data as JSON."""
        when = (datetime.fromtimestamp(self.ts // 1000, UTC).strftime(time_format)
                + f".{self.ts % 1000:03d}{zone}")
        data = f"  {json.dumps(self.data, ensure_ascii=False)}" if self.data else ""
        return f"{self.seq:>6} {when} {self.level.upper():<7} {self.message}{data}"


class RunCounter(Base):
    """The last seq allocated to a run: incremented in the transaction that stores its lines,
    so that every process and host numbering the run's lines draws from the same counter."""

    __tablename__ = "run_counters"

    run_id: Mapped[str] = mapped_column(String(MAX_RUN_ID_CHARS), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_finished_at", "finished_at"),)  # retention

    run_id: Mapped[str] = mapped_column(String(MAX_RUN_ID_CHARS), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # a RunStatus
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class HealthRecord(Base):
    __tablename__ = "health_reports"
    __table_args__ = (Index("ix_health_reports_generated_at", "generated_at"),)

    id: Mapped[int] = mapped_column(_BigIntId, primary_key=True, autoincrement=True)
    generated_at: Mapped[float] = mapped_column(Float)
    healthy: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
