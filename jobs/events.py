"""Job events: what training reported (steps, evals, checkpoints, logs), one row each.

Event data is stored as JSON; NaN, infinities, tensors and paths are made JSON-safe first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, insert, select

from jobs.db import reading
from jobs.models import JobEvent, as_utc, utcnow


@dataclass(frozen=True)
class EventInfo:
    id: int
    type: str
    time: datetime
    data: dict
    attempt: int = 0


def job_events(job_id: int, *, after_id: int = 0, db=None) -> list[EventInfo]:
    query = (
        select(JobEvent.id, JobEvent.type, JobEvent.time, JobEvent.data, JobEvent.attempt)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
    )
    with reading(db) as conn:
        return [
            EventInfo(r.id, r.type, as_utc(r.time), r.data or {}, r.attempt)
            for r in conn.execute(query)
        ]


def add_event(conn: Connection, job_id: int, attempt: int, kind: str, event: dict) -> None:
    data = {k: jsonable(v) for k, v in event.items() if k not in ("type", "time")}
    when = event.get("time")
    when = datetime.fromtimestamp(when, timezone.utc) if isinstance(when, int | float) else utcnow()
    conn.execute(
        insert(JobEvent).values(job_id=job_id, attempt=attempt, type=kind, time=when, data=data)
    )


def finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def jsonable(value):
    """JSON-safe copy: NaN/inf become None (PostgreSQL's json refuses them), paths become str."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)
