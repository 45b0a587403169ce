"""A job's statuses and the moves between them, as data: from which status to which, by whom.

jobs/queue.py makes every move as one guarded UPDATE whose `WHERE status IN (...)` comes from
this table, so a move not listed here cannot happen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    """A job's status; the values are what the database, the API and `--json` hold."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:  # in messages and tables: "done", not "Status.DONE"
        return self.value


ACTIVE = (Status.QUEUED, Status.RUNNING)
FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)


class Mover(str, enum.Enum):
    """Who moves a job."""

    WORKER = "worker"  # the worker holding the job (the guard names it: worker = :w)
    OWNER = "owner"  # the person who queued it, or an admin (jobs.access decides which)
    RECOVERY = "recovery"  # any process taking back the job of a worker that stopped or died


@dataclass(frozen=True)
class Move:
    action: str  # the jobs.queue step that makes it
    source: Status
    target: Status
    by: Mover


QUEUED, RUNNING, DONE, FAILED, CANCELLED = Status  # the table below reads as a table
WORKER, OWNER, RECOVERY = Mover

MOVES = (
    # action, from, to, who
    Move("claim", QUEUED, RUNNING, WORKER),
    Move("cancel", QUEUED, CANCELLED, OWNER),  # a running job is asked to stop
    Move("retry", FAILED, QUEUED, OWNER),
    Move("retry", CANCELLED, QUEUED, OWNER),
    Move("finish", RUNNING, DONE, WORKER),
    Move("finish", RUNNING, FAILED, WORKER),
    Move("finish", RUNNING, CANCELLED, WORKER),  # stopped as it was asked to
    Move("release", RUNNING, QUEUED, WORKER),  # shutting down: attempt not counted
    Move("recover", RUNNING, QUEUED, RECOVERY),  # no heartbeat, attempts left
    Move("recover", RUNNING, FAILED, RECOVERY),  # no heartbeat, none left
    Move("recover", RUNNING, CANCELLED, RECOVERY),  # no heartbeat, being cancelled
    Move("fail_worker_jobs", RUNNING, FAILED, RECOVERY),  # the worker's process died
)


def sources(action: str) -> tuple[Status, ...]:
    """The statuses `action` may move a job out of (the guard of its UPDATE)."""
    return tuple(dict.fromkeys(m.source for m in MOVES if m.action == action))


def targets(action: str) -> tuple[Status, ...]:
    """The statuses `action` may move a job into."""
    return tuple(dict.fromkeys(m.target for m in MOVES if m.action == action))
