"""The tables: jobs, job events, adapters with their files, checkpoints and datasets.

This mirrors the newest Alembic migration (jobs/migrations/versions); change both together.
Files are kept as blobs so that the database alone is the whole state.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.status import Status


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every time we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


Time = DateTime(timezone=True)
# An id is never handed out twice, even after the newest row is deleted (SQLite would reuse it
# without AUTOINCREMENT; PostgreSQL sequences never do). Migration 0004 converts old databases.
_NEVER_REUSED = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "priority", "id"), _NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED)
    spec: Mapped[dict] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    base_model: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(Time, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Time)
    finished_at: Mapped[datetime | None] = mapped_column(Time)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Time)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    eta_s: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    # No foreign key: adapters.job_id points back here, and a deleted adapter leaves NULL.
    adapter_id: Mapped[int | None] = mapped_column(Integer)
    data_blob_id: Mapped[int | None] = mapped_column(Integer)
    eval_blob_id: Mapped[int | None] = mapped_column(Integer)
    # Seconds one attempt may run (the limit of the studio that queued it); NULL: no limit.
    max_seconds: Mapped[float | None] = mapped_column(Float)
    # "train" or "predict" (migration 0006); a predict job's output file is a datasets row.
    kind: Mapped[str] = mapped_column(String(16), default="train", server_default="train")
    insights: Mapped[dict | None] = mapped_column(JSON)  # validation insights (training jobs)
    result_blob_id: Mapped[int | None] = mapped_column(Integer)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = _NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(Time, default=utcnow)
    data: Mapped[dict] = mapped_column(JSON)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = _NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str | None] = mapped_column(String(500), index=True)
    base_revision: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str | None] = mapped_column(String(32), index=True)
    labels: Mapped[list | None] = mapped_column(JSON)
    target_modules: Mapped[list | None] = mapped_column(JSON)
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Time, default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    # Unique: a job registers at most one adapter, however often its worker died.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    card: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict | None] = mapped_column(JSON)


class AdapterFile(Base):
    __tablename__ = "adapter_files"
    __table_args__ = (UniqueConstraint("adapter_id", "name"), _NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Checkpoint(Base):
    """The newest checkpoint of a job, as a zip of its folder; one row per job."""

    __tablename__ = "checkpoints"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Time, default=utcnow)


class DatasetBlob(Base):
    """An uploaded dataset file, so that a worker on another machine can read it."""

    __tablename__ = "datasets"
    __table_args__ = _NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Time, default=utcnow)
