"""The status table is the queue's whole state machine: every move the queue makes is in it,
every move in it is one the queue makes, and a move outside it is refused."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import update

from ia3engine.training.spec import TrainSpec
from jobs import queue
from jobs.db import writing
from jobs.errors import JobError
from jobs.models import Job, utcnow
from jobs.status import FINISHED, MOVES, Mover, Status, sources


@pytest.fixture
def spec(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    return TrainSpec(model="minilm", data=str(data), steps=3)


_priority = itertools.count(1000)  # each new job is the one the next claim takes


def _job_in(status: Status, worker: str, spec, db, *, max_attempts=3) -> int:
    job_id = queue.enqueue(spec, priority=next(_priority), max_attempts=max_attempts, db=db)
    if status == Status.QUEUED:
        return job_id
    assert queue.claim_job(worker, db=db).id == job_id
    if status != Status.RUNNING:
        assert queue.finish(job_id, worker, status, db=db)
    return job_id


def _recover(job_id, db, *, cancelling=False):
    """The job's worker went quiet 10 minutes ago (while asked to stop, with `cancelling`)."""
    old = utcnow() - timedelta(seconds=600)
    with writing(db) as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=old, cancel_requested=cancelling)
        )
        queue._recover_stale(conn, 60.0)


# Each step the queue can take: (name in the table, how to take it on job `j` held by `w`).
STEPS = {
    "claim": lambda j, w, db: queue.claim_job("another", db=db),
    "cancel": lambda j, w, db: queue.cancel_job(j, db=db),
    "retry": lambda j, w, db: queue.retry_job(j, db=db),
    "finish done": lambda j, w, db: queue.finish(j, w, Status.DONE, db=db),
    "finish failed": lambda j, w, db: queue.finish(j, w, Status.FAILED, db=db),
    "finish cancelled": lambda j, w, db: queue.finish(j, w, Status.CANCELLED, db=db),
    "release": lambda j, w, db: queue.release_job(j, w, "Stopping.", db=db),
    "recover": lambda j, w, db: _recover(j, db),
    "recover cancelling": lambda j, w, db: _recover(j, db, cancelling=True),
    "recover last attempt": lambda j, w, db: _recover(j, db),
    "fail_worker_jobs": lambda j, w, db: queue.fail_worker_jobs(w, "Its process died.", db=db),
}


def _take_every_step_from_every_status(spec, db):
    """(step, from, to, refusal) for every step tried on a job in every status."""
    seen = []
    for number, (step, start) in enumerate(itertools.product(STEPS, Status)):
        worker = f"w{number}"
        attempts = 1 if step == "recover last attempt" else 3
        job_id = _job_in(start, worker, spec, db, max_attempts=attempts)
        try:
            STEPS[step](job_id, worker, db)
            refusal = None
        except JobError as exc:
            refusal = str(exc)
        seen.append((step.split()[0], start, queue.get_job(job_id, db=db).status, refusal))
    return seen


def test_the_queue_makes_exactly_the_moves_in_the_table(spec, db_url):
    seen = _take_every_step_from_every_status(spec, db_url)
    made = {(action, source, target) for action, source, target, _ in seen if source != target}
    table = {(m.action, m.source, m.target) for m in MOVES}
    assert made <= table, f"moves the table does not allow: {made - table}"
    assert table <= made, f"moves in the table the queue never makes: {table - made}"


def test_a_move_outside_the_table_is_refused_with_its_message(spec, db_url):
    refusals = {
        (action, source): refusal
        for action, source, _, refusal in _take_every_step_from_every_status(spec, db_url)
        if refusal
    }
    retry = "only failed or cancelled jobs can be retried"
    for source in Status:
        if source not in sources("retry"):
            assert f"is {source.value}; {retry}" in refusals[("retry", source)]
    assert "is already done; there is nothing to cancel" in refusals[("cancel", Status.DONE)]
    assert "is already failed" in refusals[("cancel", Status.FAILED)]
    assert set(refusals) == {("retry", s) for s in (Status.QUEUED, Status.RUNNING, Status.DONE)} | {
        ("cancel", Status.DONE),
        ("cancel", Status.FAILED),
    }


def test_finish_refuses_a_status_that_is_not_finished(spec, db_url):
    job_id = _job_in(Status.RUNNING, "w1", spec, db_url)
    with pytest.raises(JobError, match="finish_job takes a finished status, not queued"):
        queue.finish(job_id, "w1", Status.QUEUED, db=db_url)
    assert queue.get_job(job_id, db=db_url).status == Status.RUNNING


def test_every_move_but_a_claim_by_a_worker_or_recovery_leaves_running():
    # So the one ownership guard (worker = :w AND status = 'running') is the table's guard.
    for move in MOVES:
        if move.by in (Mover.WORKER, Mover.RECOVERY) and move.action != "claim":
            assert move.source == Status.RUNNING, move


def test_statuses_are_the_strings_the_database_and_json_hold():
    assert [s.value for s in Status] == ["queued", "running", "done", "failed", "cancelled"]
    assert Status.DONE == "done" and f"{Status.DONE}" == "done" and str(Status.DONE) == "done"
    assert set(FINISHED) == {Status.DONE, Status.FAILED, Status.CANCELLED}
