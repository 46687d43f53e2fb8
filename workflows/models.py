"""SQL models: every log line (the source of truth), and workflow runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Broadcast state of a stored line.
PENDING, SENT, FAILED = "pending", "sent", "failed"

_BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_log_lines_run_seq"),
        Index("ix_log_lines_state_ts", "broadcast_state", "ts"),
    )

    id: Mapped[int] = mapped_column(_BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch milliseconds
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    broadcast_state: Mapped[str] = mapped_column(String(10), default=PENDING)
    broadcaster: Mapped[str | None] = mapped_column(String(20), nullable=True)
    #: When the sweeper last re-enqueued this (still pending) line, epoch ms.
    swept_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Run(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running, succeeded, failed
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
