"""A job as the queue reports it: JobInfo, and reading one job or a list of them.

jobs/queue.py, which changes jobs, hands these on as its reading API (queue.get_job, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from jobs.db import reading
from jobs.errors import JobError
from jobs.models import Job, as_utc
from jobs.status import Status

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class JobInfo:
    id: int
    status: Status
    spec: dict
    owner: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    step: int | None
    total_steps: int | None
    eta_s: float | None
    loss: float | None
    message: str | None
    adapter_id: int | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    heartbeat_at: datetime | None = None
    base_model: str | None = None
    data_blob_id: int | None = None
    eval_blob_id: int | None = None
    max_seconds: float | None = None  # the job's wall-clock limit per attempt; None: none
    kind: str = "train"  # "train" or "predict"
    result_blob_id: int | None = None  # a predict job's output file (datasets table)
    has_insights: bool = False  # validation insights stored (read them with job_insights)


_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")
_DERIVED = {"has_insights": Job.insights.is_not(None).label("has_insights")}
JOB_COLUMNS = [
    _DERIVED.get(name, getattr(Job, name, None)) for name in JobInfo.__dataclass_fields__
]


def as_job_info(row) -> JobInfo:
    """A row selected with JOB_COLUMNS as a JobInfo: times in UTC, the status a Status."""
    values = {name: getattr(row, name) for name in JobInfo.__dataclass_fields__}
    for name in _TIMES:
        values[name] = as_utc(values[name])
    values["cancel_requested"] = bool(values["cancel_requested"])
    values["has_insights"] = bool(values["has_insights"])
    values["status"] = Status(values["status"])
    return JobInfo(**values)


def fetch(conn: Connection, job_id: int) -> JobInfo:
    row = conn.execute(select(*JOB_COLUMNS).where(Job.id == job_id)).first()
    if row is None:
        raise JobError(f"No job with id {job_id}; `ia3 jobs list` shows the jobs there are.")
    return as_job_info(row)


def get_job(job_id: int, *, db=None) -> JobInfo:
    with reading(db) as conn:
        return fetch(conn, job_id)


def list_jobs(*, owner=None, status=None, limit: int = 200, db=None) -> list[JobInfo]:
    """Newest first; `status` is one status or a list of them."""
    query = select(*JOB_COLUMNS).order_by(Job.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(Job.status.in_(statuses))
    with reading(db) as conn:
        return [as_job_info(row) for row in conn.execute(query)]


def job_insights(job_id: int, *, db=None) -> dict | None:
    """A training job's validation insights (ia3engine/training/insights.py), None if none."""
    with reading(db) as conn:
        row = conn.execute(select(Job.id, Job.insights).where(Job.id == job_id)).first()
    if row is None:
        raise JobError(f"No job with id {job_id}; `ia3 jobs list` shows the jobs there are.")
    return row.insights
