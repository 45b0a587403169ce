"""Parallel requests against the per-user job limit: enqueues and retries sent together must
not all pass the count before any of them is added (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import threading
import time

import pytest

from jobs import access, access_limits, queue
from jobs.access_limits import EXAMPLES, Limits
from jobs.errors import LimitError
from jobs.status import Status

LIMITS = Limits(
    max_upload_mb=None, max_rows=None, max_steps=100, max_jobs_per_user=3, max_queued=100
)
SPEC = {"model": "minilm", "data": str(EXAMPLES / "sentiment_train.csv"), "steps": 2}


@pytest.fixture
def slow_count(monkeypatch):
    """A moment passes between counting a person's jobs and adding one (a busy host): long
    enough for every parallel request to pass a count made apart from the insert."""
    check_queue_room = access_limits.check_queue_room

    def slow(*args, **kwargs):
        check_queue_room(*args, **kwargs)
        time.sleep(0.3)

    monkeypatch.setattr("jobs.access_limits.check_queue_room", slow)


def _together(count: int, call) -> list:
    """Run `call()` in `count` threads released at once; each result or LimitError."""
    gate, results = threading.Barrier(count), []

    def one():
        gate.wait()
        try:
            results.append(call())
        except LimitError as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _active(db_url, owner: str) -> int:
    active = [Status.QUEUED.value, Status.RUNNING.value]
    return len(queue.list_jobs(owner=owner, status=active, db=db_url))


def test_eight_parallel_enqueues_cannot_pass_a_limit_of_three(db_url, slow_count):
    ann = access.user("ann")
    results = _together(8, lambda: access.enqueue(SPEC, actor=ann, limits=LIMITS, db=db_url))
    queued = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, LimitError)]
    assert (len(queued), len(refused)) == (3, 5)
    assert all("IA3_MAX_JOBS_PER_USER=3" in str(error) for error in refused)
    assert _active(db_url, "ann") == 3
    # Another person's share is their own.
    assert isinstance(access.enqueue(SPEC, actor=access.user("bob"), limits=LIMITS, db=db_url), int)


def test_parallel_retries_cannot_pass_the_limit(db_url, slow_count):
    ann = access.user("ann")
    jobs = [access.enqueue(SPEC, actor=ann, limits=LIMITS, db=db_url) for _ in range(3)]
    for job_id in jobs:
        queue.cancel_job(job_id, db=db_url)
    access.enqueue(SPEC, actor=ann, limits=LIMITS, db=db_url)  # one active: room for two
    retry, lock = iter(jobs), threading.Lock()

    def next_retry():
        with lock:
            job_id = next(retry)
        return access.retry_job(job_id, actor=ann, limits=LIMITS, db=db_url)

    results = _together(3, next_retry)
    assert sum(isinstance(r, int) for r in results) == 2
    assert _active(db_url, "ann") == 3
