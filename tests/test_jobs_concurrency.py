"""Several worker processes against one database: every job is claimed exactly once, and
processes that start together migrate the schema without tripping over each other."""

from __future__ import annotations

import json
import multiprocessing
import threading

import jobs_support
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from ia3engine.training.spec import TrainSpec
from jobs import queue
from jobs.db import _make_engine, get_engine, head_revision
from jobs.status import Status

PROCESSES = 4
JOBS = 200


def _claim_until_empty(url: str, worker: str, out: str, go) -> None:
    """A worker without training: claim, finish, repeat, through the real queue code."""

    get_engine(url)
    go.wait()
    claimed = []
    while True:
        job = queue.claim_job(worker, db=url)
        if job is None:
            # SKIP LOCKED may pass over rows that others are claiming right now.
            if not queue.list_jobs(status="queued", limit=1, db=url):
                break
            continue
        if not queue.finish(job.id, worker, Status.DONE, attempt=job.attempts, db=url):
            raise RuntimeError(f"{worker} lost job {job.id} it had just claimed")
        claimed.append(job.id)
    with open(out, "w") as f:
        json.dump(claimed, f)


def _migrate(url: str, go) -> None:
    go.wait()
    get_engine(url)


def _run_all(target, args_for, timeout=120) -> None:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    processes = [context.Process(target=target, args=(*args_for(i), go)) for i in range(PROCESSES)]
    for process in processes:
        process.start()
    go.set()
    for process in processes:
        process.join(timeout)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert codes == [0] * PROCESSES


def test_four_workers_run_every_job_exactly_once(db_url, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n")
    spec = TrainSpec(model="minilm", data=str(data))
    ids = [queue.enqueue(spec, priority=i % 3, db=db_url) for i in range(JOBS)]
    outs = [tmp_path / f"claimed-{i}.json" for i in range(PROCESSES)]

    _run_all(_claim_until_empty, lambda i: (db_url, f"worker-{i}", str(outs[i])))

    per_worker = [json.loads(out.read_text()) for out in outs]
    claimed = [job_id for ids_ in per_worker for job_id in ids_]
    assert sorted(claimed) == sorted(ids)  # each job once: no duplicates, none missing
    jobs = {job.id: job for job in queue.list_jobs(limit=JOBS + 1, db=db_url)}
    assert all(job.status == "done" and job.attempts == 1 for job in jobs.values())
    for i, ids_ in enumerate(per_worker):
        assert all(jobs[job_id].worker == f"worker-{i}" for job_id in ids_)


@pytest.mark.parametrize("kind", jobs_support.DB_KINDS)
def test_workers_starting_together_migrate_once(kind, tmp_path):
    url, cleanup = jobs_support.make_database(kind, tmp_path)
    try:
        _run_all(_migrate, lambda i: (url,))

        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
        engine.dispose()
    finally:
        cleanup()


def _connect_after(barrier: threading.Barrier, engine, failures: list[str]) -> None:
    barrier.wait()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        failures.append(str(exc.orig))


def test_connections_opening_a_new_sqlite_file_together_all_get_in(tmp_path):
    """Switching a new file to WAL fails one of two racing connections at once ("database is
    locked": SQLite skips the busy handler there), which crashed a worker starting beside
    others now and then; the switch is retried, so no connection is refused."""
    failures: list[str] = []
    for round_ in range(150):
        engines = [_make_engine(f"sqlite:///{tmp_path / f'new-{round_}.db'}") for _ in range(6)]
        barrier = threading.Barrier(len(engines))
        threads = [
            threading.Thread(target=_connect_after, args=(barrier, engine, failures))
            for engine in engines
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == []
