"""The queue under faults and attacks: workers with wrong clocks, a slow registration, a passing
database error, a planted pickle checkpoint, and a job that runs past its wall-clock limit.

Most run a worker in this process against a fresh SQLite (and PostgreSQL) database; the
wall-clock limit is also tried on a real studio with password sign-in.
"""

from __future__ import annotations

import functools
import io
import time
import zipfile
from datetime import timedelta

import jobs_support
import pytest
import torch
from attack_support import job_done, running_studio
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from train_models import paced_train, save_tiny
from waiting import wait_for

from ia3engine.training.spec import TrainSpec
from jobs import access, blobs, queue, registry
from jobs.db import resolve, writing
from jobs.models import utcnow
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-bert"))


def _spec(base, tmp_path, **fields) -> TrainSpec:
    data = jobs_support.write_reviews(tmp_path / "reviews.csv")
    values = dict(model=base, data=data, steps=4, batch_size=8, max_length=16, eval_every=0)
    return TrainSpec(**(values | fields))


def _clock(monkeypatch, skew: timedelta) -> None:
    """This process's clock runs `skew` off (for everything the queue asks it)."""
    monkeypatch.setattr("jobs.queue.utcnow", lambda: utcnow() + skew)


# Clocks ---------------------------------------------------------------------------------


def test_a_worker_whose_clock_runs_behind_keeps_its_job(db_url, base, tmp_path, monkeypatch):
    job_id = queue.enqueue(_spec(base, tmp_path), db=db_url)
    _clock(monkeypatch, -timedelta(minutes=10))
    assert queue.claim_job("slow-clock", db=db_url).id == job_id
    assert queue.heartbeat(job_id, "slow-clock", db=db_url) is False
    monkeypatch.undo()
    # A worker with the right time must not think the job's worker died ten minutes ago.
    assert queue.claim_job("thief", stale_after_s=60, db=db_url) is None
    assert queue.get_job(job_id, db=db_url).worker == "slow-clock"


def test_a_dead_worker_whose_clock_ran_ahead_loses_its_job(db_url, base, tmp_path, monkeypatch):
    job_id = queue.enqueue(_spec(base, tmp_path), db=db_url)
    _clock(monkeypatch, timedelta(hours=1))
    assert queue.claim_job("fast-clock", db=db_url).id == job_id
    assert queue.heartbeat(job_id, "fast-clock", db=db_url) is False
    monkeypatch.undo()
    time.sleep(1.5)  # then it died: its job must go stale, not an hour from now
    again = queue.claim_job("next", stale_after_s=1.0, db=db_url)
    assert again is not None and (again.id, again.worker) == (job_id, "next")


# The worker ------------------------------------------------------------------------------


def test_heartbeats_go_on_while_the_adapter_is_registered(db_url, base, tmp_path, monkeypatch):
    job_id = queue.enqueue(_spec(base, tmp_path), db=db_url)
    stolen = []
    read_folder = registry.read_folder

    def slow_read(folder):  # a big adapter, a slow disk: registering takes a while
        time.sleep(2.0)
        stolen.append(queue.claim_job("thief", stale_after_s=1.0, db=db_url))
        return read_folder(folder)

    monkeypatch.setattr("jobs.job_run.registry.read_folder", slow_read)
    worker = Worker(db_url, heartbeat_s=0.2, cancel_poll_s=0.1, step_event_s=0, worker_id="w")
    assert worker.run_one()
    assert stolen == [None]  # nobody took the job while it was being registered
    job = queue.get_job(job_id, db=db_url)
    assert (job.status, job.worker, job.attempts) == ("done", "w", 1), job.message
    assert [a.job_id for a in registry.list_adapters(db=db_url)] == [job_id]


def test_a_passing_database_error_is_retried_not_a_failed_job(db_url, base, tmp_path):
    job_id = queue.enqueue(_spec(base, tmp_path), db=db_url)
    engine = resolve(db_url)
    failures = {"left": 3}

    def locked(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO job_events") and failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError(statement, parameters, Exception("database is locked"))

    event.listen(engine, "before_cursor_execute", locked)
    try:
        assert Worker(db_url, step_event_s=0, worker_id="w").run_one()
    finally:
        event.remove(engine, "before_cursor_execute", locked)
    assert failures["left"] == 0
    job = queue.get_job(job_id, db=db_url)
    assert (job.status, job.attempts) == ("done", 1), job.message


def _pickle_bomb(marker):
    """Bytes that torch.load(weights_only=False) would turn into open(marker, 'w')."""

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buffer = io.BytesIO()
    torch.save({"format": 1, "spec": {}, "payload": Bomb()}, buffer)
    return buffer.getvalue()


def test_a_planted_pickle_checkpoint_runs_no_code(db_url, base, tmp_path):
    job_id = queue.enqueue(_spec(base, tmp_path), db=db_url)
    marker = tmp_path / "the-pickle-ran"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as folder:
        folder.writestr("checkpoint.pt", _pickle_bomb(marker))
        folder.writestr("rng-0.pt", _pickle_bomb(marker))
    with writing(db_url) as conn:  # someone who could write to the database (or a bug)
        blobs.store_checkpoint(conn, job_id, 2, ".", archive.getvalue())
    assert Worker(db_url, step_event_s=0).run_one()
    assert not marker.exists()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and "not loaded" in job.message, job.message
    assert str(tmp_path) not in job.message


# The wall-clock limit --------------------------------------------------------------------

TEN_STEPS_A_SECOND = functools.partial(paced_train, pause_s=0.1)


def test_a_remote_worker_applies_the_queuing_studios_time_limit(
    db_url, base, tmp_path, monkeypatch
):
    monkeypatch.setenv("IA3_MAX_JOB_MINUTES", "0.02")  # the studio's setting: 1.2 s
    monkeypatch.setattr("jobs.access_limits.check_model", lambda *args: None)  # a local base
    monkeypatch.setattr("jobs.access_limits.check_data_path", lambda field, path: None)
    actor = access.user("ann")
    job_id = access.enqueue(_spec(base, tmp_path, steps=200), actor=actor, db=db_url)
    monkeypatch.delenv("IA3_MAX_JOB_MINUTES")  # the worker's machine has no such setting
    started = time.monotonic()
    assert Worker(db_url, step_event_s=0, train_fn=TEN_STEPS_A_SECOND).run_one()
    assert time.monotonic() - started < 15  # 200 paced steps would take 20 s at least
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and job.step < 200, job.message
    assert "IA3_MAX_JOB_MINUTES" in job.message and "fewer steps" in job.message


@pytest.fixture(scope="module")
def limited_studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("time-limited-studio")
    with running_studio(tmp, workers=1, IA3_MAX_JOB_MINUTES="0.2") as studio:
        yield studio


def test_a_job_past_the_studios_time_limit_is_stopped_and_failed(limited_studio):
    ann = limited_studio.client("ann")
    spec = {"model": "minilm", "data": "sentiment", "steps": 5000, "eval_every": 0}
    job = ann.predict(spec, None, None, api_name="/enqueue")

    def ended():
        status = ann.predict(job, api_name="/job_status")
        return status if status["status"] not in ("queued", "running") else None

    status = wait_for(ended, 120, "the job past the time limit to end", poll_s=1)
    assert status["status"] == "failed", status
    assert (status["step"] or 0) < 5000
    assert "12 seconds" in status["message"] and "IA3_MAX_JOB_MINUTES" in status["message"]
    assert "fewer steps" in status["message"]
    # The worker is free again: a job that fits the limit runs to the end.
    short = ann.predict({**spec, "steps": 2}, None, None, api_name="/enqueue")
    wait_for(lambda: job_done(ann, short), 120, "the short job to finish", poll_s=1)


# What the job's owner reads --------------------------------------------------------------


def test_failure_messages_never_show_server_paths(db_url, base, tmp_path):
    secret = tmp_path / "srv-secret-folder"
    secret.mkdir()
    vanishing = secret / "reviews.csv"
    vanishing.write_text("text,label\nfine,pos\nbad,neg\n")
    gone = queue.enqueue(_spec(base, tmp_path, data=str(vanishing)), db=db_url)
    vanishing.unlink()
    crashing = queue.enqueue(_spec(base, tmp_path), db=db_url)

    def crash(spec, **kwargs):
        open(secret / "cache" / "weights.bin")  # FileNotFoundError naming the full path

    assert Worker(db_url).run_one()
    assert Worker(db_url, train_fn=crash).run_one()
    for job_id, says in ((gone, "does not exist"), (crashing, "weights.bin")):
        job = queue.get_job(job_id, db=db_url)
        assert job.status == "failed" and says in job.message, job.message
        assert str(tmp_path) not in job.message and "srv-secret-folder" not in job.message
