"""The job queue: enqueue, claim, heartbeat, cancel, retry, recover, finish.

Every change of a job's status happens in this module, each as one guarded UPDATE whose
`status IN (...)` comes from jobs/status.py's table, and every write a worker makes is guarded
by `_held_by`, so a job is claimed once, finished once, and never deleted when it leaves the
queue. Reading jobs and their events (job_info.py, events.py) is handed on from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, select, text, update

from jobs import blobs
from jobs.db import db_now, reading, retried, writing
from jobs.errors import JobError
from jobs.events import EventInfo, add_event, finite, job_events, jsonable  # noqa: F401 (API)
from jobs.job_info import (  # noqa: F401 (API: reading jobs)
    DEFAULT_MAX_ATTEMPTS,
    JOB_COLUMNS,
    JobInfo,
    as_job_info,
    fetch,
    get_job,
    job_insights,
    list_jobs,
)
from jobs.models import Job, utcnow
from jobs.specs import data_paths, validated_spec
from jobs.status import Status, sources, targets

log = logging.getLogger(__name__)

# Any constant: on PostgreSQL, enqueues and retries take this lock so that counting a
# person's jobs and adding one happen as one step (SQLite's BEGIN IMMEDIATE already does).
_ENQUEUE_LOCK_KEY = 4_193_004


def _leaving(action: str) -> ColumnElement[bool]:
    """The guard of a move: the job is in a status the table lets `action` move it out of."""
    return Job.status.in_(sources(action))


def _held_by(worker: str) -> ColumnElement[bool]:
    """The guard of every write a worker makes: `worker` still holds the job and it runs.

    A worker that lost its job (paused, then taken over) changes nothing.
    """
    return and_(Job.worker == worker, Job.status == Status.RUNNING)


# Submitting ----------------------------------------------------------------------------


def enqueue(
    spec,
    *,
    owner: str | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    upload_data: bool = False,
    max_seconds: float | None = None,
    room: Callable[[Connection], None] | None = None,
    db=None,
) -> int:
    """Validate `spec` (TrainSpec or dict; SpecError names every bad field) and queue it.

    With upload_data the dataset files are copied into the database, so a worker on any
    machine can read them; otherwise the paths must exist on the worker when it starts.
    max_seconds: the wall-clock limit of each attempt, kept with the job so that every
    worker, wherever it runs, applies the limit of the studio that queued it. `room` is
    called inside the inserting transaction (after a lock that serialises enqueues) and
    raises to refuse: a limit it checks holds however many requests arrive together.
    """
    spec_dict = validated_spec(spec)
    return insert_job(
        spec_dict,
        owner=owner,
        priority=priority,
        max_attempts=max_attempts,
        data_files=data_paths(spec_dict) if upload_data else {},
        max_seconds=max_seconds,
        room=room,
        db=db,
    )


def insert_job(
    spec_dict: dict,
    *,
    kind: str = "train",
    owner: str | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    data_files: dict | None = None,
    max_seconds: float | None = None,
    room: Callable[[Connection], None] | None = None,
    db=None,
) -> int:
    """Add one queued job of `kind` whose spec is already validated (enqueue for training,
    jobs.predict_jobs for predictions); `data_files` (field -> path: data, eval_data) are
    copied into the database as the owner's datasets."""
    if int(max_attempts) < 1:
        raise JobError(f"max_attempts must be at least 1, got {max_attempts}.")
    if max_seconds is not None and not float(max_seconds) > 0:
        raise JobError(f"max_seconds must be positive (or None for no limit), got {max_seconds}.")
    with writing(db) as conn:
        if room is not None:
            _lock_enqueues(conn)
            room(conn)
        blob_ids = {}
        for field, path in (data_files or {}).items():
            blob_ids[field] = blobs.store_dataset(conn, path, owner=owner)
        job_id = conn.scalar(
            insert(Job)
            .values(
                status=Status.QUEUED,
                kind=kind,
                spec=spec_dict,
                owner=owner,
                priority=int(priority),
                base_model=spec_dict.get("model"),
                created_at=utcnow(),
                attempts=0,
                max_attempts=int(max_attempts),
                cancel_requested=False,
                data_blob_id=blob_ids.get("data"),
                eval_blob_id=blob_ids.get("eval_data"),
                max_seconds=None if max_seconds is None else float(max_seconds),
            )
            .returning(Job.id)
        )
    log.info(
        "%s job %s queued (model %s, priority %s)", kind, job_id, spec_dict.get("model"), priority
    )
    return job_id


def _lock_enqueues(conn: Connection) -> None:
    """Serialise enqueues and retries until this transaction ends (PostgreSQL; SQLite's
    write transactions are serial already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ENQUEUE_LOCK_KEY})


def set_priority(job_id: int, priority: int, *, db=None) -> JobInfo:
    """Change the priority of a queued job (higher runs first)."""
    with writing(db) as conn:
        done = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == Status.QUEUED)
            .values(priority=int(priority))
        ).rowcount
        job = fetch(conn, job_id)
    if not done:
        raise JobError(f"Job {job_id} is {job.status}; only a queued job's priority can change.")
    return job


def cancel_job(job_id: int, *, db=None) -> JobInfo:
    """A queued job is cancelled at once; a running one is asked to stop at its next step."""
    with writing(db) as conn:
        now = utcnow()
        conn.execute(
            update(Job)
            .where(Job.id == job_id, _leaving("cancel"))
            .values(
                status=Status.CANCELLED,
                finished_at=now,
                message="Cancelled before it started.",
            )
        )
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == Status.RUNNING)
            .values(cancel_requested=True)
        )
        job = fetch(conn, job_id)
    if job.status in (Status.DONE, Status.FAILED):
        raise JobError(f"Job {job_id} is already {job.status}; there is nothing to cancel.")
    return job


def retry_job(job_id: int, *, room: Callable[[Connection], None] | None = None, db=None) -> int:
    """Put a failed or cancelled job back in the queue; returns its id (the same job).

    The same row is requeued, not copied: its events stay, it gets max_attempts more
    attempts (numbering goes on, so events of each attempt stay apart), and it resumes
    from its last stored checkpoint. `room` refuses inside the transaction, as in enqueue.
    """
    with writing(db) as conn:
        if room is not None:
            _lock_enqueues(conn)
            room(conn)
        done = conn.execute(
            update(Job)
            .where(Job.id == job_id, _leaving("retry"))
            .values(
                status=Status.QUEUED,
                max_attempts=Job.attempts + DEFAULT_MAX_ATTEMPTS,
                cancel_requested=False,
                finished_at=None,
                message=None,
            )
        ).rowcount
        job = fetch(conn, job_id)
        if done:
            add_event(conn, job_id, 0, "log", {"message": "Retried: back in the queue."})
    if not done:
        raise JobError(
            f"Job {job_id} is {job.status}; only failed or cancelled jobs can be retried. "
            "Submit its spec again to train another adapter."
        )
    return job_id


# Working (called by workers) ------------------------------------------------------------


@retried
def claim_job(worker: str, *, stale_after_s: float = 60.0, db=None) -> JobInfo | None:
    """Take the next queued job (highest priority, then oldest) for `worker`, or None.

    One guarded UPDATE: the sub-select picks a candidate (skipping rows another worker
    holds, on PostgreSQL; under BEGIN IMMEDIATE, on SQLite) and `status='queued'` in the
    outer WHERE makes a lost race update nothing.
    """
    with writing(db) as conn:
        _recover_stale(conn, stale_after_s)
        candidate = (
            select(Job.id).where(_leaving("claim")).order_by(Job.priority.desc(), Job.id).limit(1)
        )
        if conn.dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        job_id = conn.scalar(
            update(Job)
            .where(Job.id == candidate.scalar_subquery(), _leaving("claim"))
            .values(
                status=Status.RUNNING,
                worker=worker,
                heartbeat_at=db_now(conn),
                started_at=func.coalesce(Job.started_at, utcnow()),
                attempts=Job.attempts + 1,
            )
            .returning(Job.id)
        )
        if job_id is None:
            return None
        return fetch(conn, job_id)


def _recover_stale(conn: Connection, stale_after_s: float) -> None:
    """Jobs whose worker stopped heartbeating go back to the queue, or fail at max attempts.

    Heartbeats are written with the database's clock and judged by it: a worker whose own
    clock runs behind or ahead neither loses its job nor keeps a dead one.
    """
    cutoff = db_now(conn, seconds_ago=stale_after_s)
    query = select(Job.id, Job.worker, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
        _leaving("recover"), Job.heartbeat_at < cutoff
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for row in conn.execute(query).all():
        gone = f"Worker {row.worker} stopped responding (no heartbeat for {stale_after_s:g} s)"
        if row.cancel_requested:
            status, message = Status.CANCELLED, f"{gone}; the job was being cancelled."
        elif row.attempts >= row.max_attempts:
            status = Status.FAILED
            message = (
                f"{gone} on attempt {row.attempts} of {row.max_attempts}; giving up. A worker "
                "that dies repeatedly has often run out of memory: try a smaller batch size "
                f"or model. The last checkpoint is kept; `ia3 jobs retry {row.id}` resumes."
            )
        else:
            status = Status.QUEUED
            message = f"{gone} on attempt {row.attempts}; back in the queue to resume."
        done = conn.execute(
            update(Job)
            .where(Job.id == row.id, _leaving("recover"), Job.heartbeat_at < cutoff)
            .values(
                status=status,
                message=None if status == Status.QUEUED else message,
                finished_at=None if status == Status.QUEUED else utcnow(),
            )
        ).rowcount
        if done:
            log.warning("job %s: %s", row.id, message)
            add_event(conn, row.id, row.attempts, "log", {"message": message, "level": "warning"})


@retried
def heartbeat(job_id: int, worker: str, *, db=None) -> bool | None:
    """Refresh the job's heartbeat; returns cancel_requested, or None if `worker` lost it."""
    with writing(db) as conn:
        row = conn.execute(
            update(Job)
            .where(Job.id == job_id, _held_by(worker))
            .values(heartbeat_at=db_now(conn))
            .returning(Job.cancel_requested)
        ).first()
    return None if row is None else bool(row.cancel_requested)


def running_job(worker: str, *, db=None) -> JobInfo | None:
    """The job `worker` is running now, if any."""
    query = select(*JOB_COLUMNS).where(_held_by(worker))
    with reading(db) as conn:
        row = conn.execute(query.limit(1)).first()
    return None if row is None else as_job_info(row)


@retried
def cancel_requested(job_id: int, *, db=None) -> bool:
    with reading(db) as conn:
        return bool(conn.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


@retried
def record_event(job_id: int, worker: str, attempt: int, event: dict, *, db=None) -> bool:
    """Store one training event; step events also update the job's progress columns.

    Returns False (and stores nothing) when `worker` no longer holds the job.
    """
    kind = str(event.get("type", "log"))
    progress: dict[str, Any] = {}
    if kind == "step":
        progress = {
            "step": event.get("step"),
            "total_steps": event.get("total_steps"),
            "loss": finite(event.get("loss")),
            "eta_s": finite(event.get("eta_s")),
        }
    with writing(db) as conn:
        owned = conn.execute(
            update(Job)
            .where(Job.id == job_id, _held_by(worker))
            .values(
                **{k: v for k, v in progress.items() if v is not None}, heartbeat_at=db_now(conn)
            )
        ).rowcount
        if owned:
            add_event(conn, job_id, attempt, kind, event)
    return bool(owned)


@retried
def record_checkpoint(
    job_id: int, worker: str, attempt: int, event: dict, checkpoint_dir, *, db=None
) -> bool:
    """Store the checkpoint an event announces as the job's newest, if `worker` holds it.

    Guarded like every other write: a worker that lost its job cannot overwrite the
    checkpoint the job's new worker resumes from.
    """
    relative, data = blobs.pack_checkpoint(event["path"], checkpoint_dir)
    with writing(db) as conn:
        owned = conn.execute(
            update(Job).where(Job.id == job_id, _held_by(worker)).values(heartbeat_at=db_now(conn))
        ).rowcount
        if owned:
            blobs.store_checkpoint(conn, job_id, event.get("step", 0), relative, data)
            add_event(conn, job_id, attempt, "checkpoint", event)
    return bool(owned)


def finish_job(
    conn: Connection,
    job_id: int,
    worker: str,
    status: Status,
    message: str | None = None,
    *,
    adapter_id: int | None = None,
    result_blob_id: int | None = None,
    insights: dict | None = None,
    attempt: int = 0,
) -> bool:
    """Move a running job held by `worker` to done, failed or cancelled, inside `conn`
    (a training job's adapter and validation insights, a predict job's output file go with it).

    Returns False when the worker no longer holds it; the caller must then roll back
    anything it did in the same transaction (such as registering the adapter).
    """
    if status not in targets("finish"):
        raise JobError(f"finish_job takes a finished status, not {status.value}.")
    values: dict[str, Any] = {"status": status, "message": message, "finished_at": utcnow()}
    if adapter_id is not None:
        values["adapter_id"] = adapter_id
    if result_blob_id is not None:
        values["result_blob_id"] = result_blob_id
    if insights is not None:  # never written as JSON null: has_insights tests IS NOT NULL
        values["insights"] = jsonable(insights)  # NaN (a diverged run) -> null for PostgreSQL
    done = conn.execute(
        update(Job).where(Job.id == job_id, _held_by(worker)).values(**values)
    ).rowcount
    if done:
        data = {"message": message or status.value, "status": status.value}
        add_event(conn, job_id, attempt, "log", data)
    return bool(done)


@retried
def finish(job_id: int, worker: str, status: Status, message=None, *, attempt=0, db=None):
    """finish_job in its own transaction."""
    with writing(db) as conn:
        return finish_job(conn, job_id, worker, status, message, attempt=attempt)


@retried
def release_job(job_id: int, worker: str, message: str, *, db=None) -> bool:
    """A worker that is shutting down puts its job back in the queue (attempt not counted)."""
    with writing(db) as conn:
        done = conn.execute(
            update(Job)
            .where(Job.id == job_id, _held_by(worker))
            .values(status=Status.QUEUED, attempts=Job.attempts - 1, message=None)
        ).rowcount
        if done:
            add_event(conn, job_id, 0, "log", {"message": message})
    return bool(done)


@retried
def fail_worker_jobs(worker: str, message: str, *, db=None) -> list[int]:
    """End as failed the running jobs `worker` holds (a worker process that died); their ids.

    Guarded by the worker's id, which names one process: a job another worker has taken
    over meanwhile is left alone.
    """
    with writing(db) as conn:
        rows = conn.execute(
            update(Job)
            .where(_held_by(worker))
            .values(status=Status.FAILED, message=message, finished_at=utcnow())
            .returning(Job.id, Job.attempts)
        ).all()
        for row in rows:
            add_event(conn, row.id, row.attempts, "log", {"message": message, "level": "error"})
    for row in rows:
        log.error("job %s: %s", row.id, message)
    return [row.id for row in rows]
