"""The runs a person compares: job ids checked and bounded, each job fetched through the owner
check, with its events, its adapter and the metrics of its untuned start.

The studio's "Compare runs" (app/compare.py) shapes these into curves and tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from jobs import access
from jobs.access import Actor
from jobs.db import reading
from jobs.errors import AccessDeniedError, JobError
from jobs.events import EventInfo
from jobs.job_info import JobInfo
from jobs.models import Adapter, Job
from jobs.registry import AdapterInfo

MIN_RUNS, MAX_RUNS = 2, 8
_HIGHEST_ID = 2**31 - 1  # the largest id the jobs table's integer key holds


@dataclass(frozen=True)
class Run:
    """One training job as compared: its row, events, adapter (None until it has one, or once
    deleted) and the validation metrics before tuning ({} when none were measured)."""

    job: JobInfo
    events: list[EventInfo]
    adapter: AdapterInfo | None
    before: dict


def job_ids_from(value) -> list[int]:
    """The distinct job ids of `value` (a list of ids, or a text such as "3, 5"), in the order
    given; refuses anything else, and fewer than MIN_RUNS or more than MAX_RUNS distinct jobs."""
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list | tuple):
        raise JobError(
            "Job ids must be a list of job numbers, e.g. [3, 5]; pick two or more of your jobs."
        )
    ids = []
    for item in value:
        job_id = _job_id(item)
        if job_id not in ids:
            ids.append(job_id)
    if len(ids) < MIN_RUNS:
        raise JobError(
            f"Comparing needs at least {MIN_RUNS} different jobs; {len(ids)} given. "
            "Pick two or more of your training jobs."
        )
    if len(ids) > MAX_RUNS:
        raise JobError(
            f"At most {MAX_RUNS} jobs can be compared at once; {len(ids)} given. "
            f"Leave out {len(ids) - MAX_RUNS}."
        )
    return ids


def _job_id(item) -> int:
    """One job id: a whole number (or its digits as text) from 1 up; nothing else."""
    if isinstance(item, str) and item.strip().lstrip("#").isdigit():
        item = int(item.strip().lstrip("#"))
    elif isinstance(item, float) and item.is_integer():
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= _HIGHEST_ID:
        shown = repr(item)[:40]
        raise JobError(
            f"{shown} is not a job number; job ids are whole numbers such as 3 "
            "(the Jobs tab lists yours)."
        )
    return item


def compared_runs(job_ids, *, actor: Actor, db=None) -> list[Run]:
    """The runs behind `job_ids` (see job_ids_from), each only if `actor` may see it: another
    person's job is refused exactly like a missing one. Predict jobs are refused by name."""
    runs = []
    for job_id in job_ids_from(job_ids):
        job = access.get_job(job_id, actor=actor, db=db)
        if job.kind != "train":
            raise JobError(
                f"Job #{job_id} is a prediction, not a training run; only training jobs have "
                "curves and settings to compare. Pick training jobs instead."
            )
        events = access.job_events(job_id, actor=actor, db=db)
        runs.append(Run(job, events, _adapter(job, actor, db), _before(job, db)))
    return runs


def _adapter(job: JobInfo, actor: Actor, db) -> AdapterInfo | None:
    if job.adapter_id is None:
        return None
    try:
        return access.get_adapter(job.adapter_id, actor=actor, db=db)
    except AccessDeniedError:  # deleted since (the job keeps the number), or no longer theirs
        return None


def _before(job: JobInfo, db) -> dict:
    """Validation metrics of the untuned start: from the job's insights when they hold them,
    else from what training wrote beside the adapter (training_info.json's metrics_before).
    Only called for a job the actor may see."""
    with reading(db) as conn:
        insights = conn.scalar(select(Job.insights).where(Job.id == job.id))
        info = None
        if job.adapter_id is not None:
            info = conn.scalar(select(Adapter.info).where(Adapter.id == job.adapter_id))
    found = numbers(insights.get("metrics_before")) if isinstance(insights, dict) else {}
    if not found and isinstance(info, dict):
        found = numbers(info.get("metrics_before"))
    return found


def numbers(metrics) -> dict:
    """The numeric entries of a metrics dict, as floats."""
    if not isinstance(metrics, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
