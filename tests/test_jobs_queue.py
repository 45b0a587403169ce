"""The job queue on SQLite and PostgreSQL: validation, order, cancel, retry, recovery,
events, uploaded datasets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from ia3engine.errors import ConfigError, DataError, SpecError
from ia3engine.training.spec import TrainSpec
from jobs import blobs, queue
from jobs.db import reading, writing
from jobs.errors import JobError
from jobs.models import Job, utcnow
from jobs.status import Status
from jobs.time_limit import DEFAULT_MINUTES, VARIABLE, job_seconds


@pytest.fixture
def spec(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    return TrainSpec(model="minilm", data=str(data), steps=3)


def _age_heartbeat(url, job_id, seconds):
    with writing(url) as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_enqueue_refuses_a_bad_spec_naming_every_field(db_url, spec):
    bad = spec.to_dict() | {"steps": 0, "task": "dance"}
    with pytest.raises(SpecError) as refusal:
        queue.enqueue(bad, db=db_url)
    assert any("steps" in p for p in refusal.value.problems)
    assert any("task" in p for p in refusal.value.problems)
    with pytest.raises(SpecError, match="Unknown spec field 'colour'"):
        queue.enqueue(spec.to_dict() | {"colour": "red"}, db=db_url)
    with pytest.raises(SpecError, match="does not exist"):
        queue.enqueue(spec.to_dict() | {"data": "/no/such/file.csv"}, db=db_url)
    assert queue.list_jobs(db=db_url) == []


def test_enqueue_stores_the_spec_and_lists_newest_first(db_url, spec):
    first = queue.enqueue(spec, owner="ann", db=db_url)
    second = queue.enqueue(spec.to_dict(), owner="bob", priority=5, db=db_url)
    job = queue.get_job(first, db=db_url)
    assert job.status == "queued" and job.spec == spec.to_dict()
    assert (job.owner, job.attempts, job.cancel_requested) == ("ann", 0, False)
    assert job.created_at.tzinfo is not None
    assert [j.id for j in queue.list_jobs(db=db_url)] == [second, first]
    assert [j.id for j in queue.list_jobs(owner="bob", db=db_url)] == [second]
    assert queue.list_jobs(status="running", db=db_url) == []
    with pytest.raises(JobError, match="No job with id 999"):
        queue.get_job(999, db=db_url)


def test_claim_takes_highest_priority_then_oldest(db_url, spec):
    low = queue.enqueue(spec, db=db_url)
    high = queue.enqueue(spec, priority=10, db=db_url)
    later_low = queue.enqueue(spec, db=db_url)
    queue.set_priority(later_low, -1, db=db_url)
    claimed = [queue.claim_job("w1", db=db_url).id for _ in range(3)]
    assert claimed == [high, low, later_low]
    assert queue.claim_job("w1", db=db_url) is None
    job = queue.get_job(high, db=db_url)
    assert (job.status, job.worker, job.attempts) == ("running", "w1", 1)
    assert job.started_at is not None and job.heartbeat_at is not None
    with pytest.raises(JobError, match="only a queued job's priority"):
        queue.set_priority(high, 3, db=db_url)


def test_cancel_queued_is_immediate_and_running_is_requested(db_url, spec):
    running = queue.enqueue(spec, db=db_url)
    waiting = queue.enqueue(spec, db=db_url)
    queue.claim_job("w1", db=db_url)
    assert queue.cancel_job(waiting, db=db_url).status == "cancelled"
    assert queue.claim_job("w2", db=db_url) is None  # a cancelled job is never claimed
    job = queue.cancel_job(running, db=db_url)
    assert (job.status, job.cancel_requested) == ("running", True)
    assert queue.heartbeat(running, "w1", db=db_url) is True
    assert queue.cancel_requested(running, db=db_url)
    with writing(db_url) as conn:
        queue.finish_job(conn, running, "w1", Status.DONE)
    with pytest.raises(JobError, match="already done"):
        queue.cancel_job(running, db=db_url)


def test_retry_requeues_the_same_job_keeping_its_events(db_url, spec):
    job_id = queue.enqueue(spec, db=db_url)
    queue.claim_job("w1", db=db_url)
    assert queue.record_event(job_id, "w1", 1, {"type": "log", "message": "hi"}, db=db_url)
    assert queue.finish(job_id, "w1", Status.FAILED, "Out of memory.", db=db_url)
    assert queue.get_job(job_id, db=db_url).message == "Out of memory."
    assert queue.retry_job(job_id, db=db_url) == job_id
    job = queue.get_job(job_id, db=db_url)
    assert (job.status, job.message, job.finished_at) == ("queued", None, None)
    assert (job.attempts, job.max_attempts) == (1, 1 + queue.DEFAULT_MAX_ATTEMPTS)
    kinds = [(e.type, e.data.get("message")) for e in queue.job_events(job_id, db=db_url)]
    assert kinds[0] == ("log", "hi") and kinds[-1] == ("log", "Retried: back in the queue.")
    again = queue.claim_job("w2", db=db_url)
    assert (again.id, again.attempts) == (job_id, 2)
    with writing(db_url) as conn:
        queue.finish_job(conn, job_id, "w2", Status.DONE)
    with pytest.raises(JobError, match="only failed or cancelled jobs can be retried"):
        queue.retry_job(job_id, db=db_url)


def test_stale_job_goes_back_to_the_queue_and_its_old_worker_loses_it(db_url, spec):
    job_id = queue.enqueue(spec, max_attempts=2, db=db_url)
    queue.claim_job("dead", db=db_url)
    _age_heartbeat(db_url, job_id, 120)
    again = queue.claim_job("alive", stale_after_s=60, db=db_url)
    assert (again.id, again.worker, again.attempts) == (job_id, "alive", 2)
    # The first worker, if it was only paused, can no longer write or finish.
    assert queue.heartbeat(job_id, "dead", db=db_url) is None
    assert not queue.record_event(job_id, "dead", 1, {"type": "step", "step": 9}, db=db_url)
    assert not queue.finish(job_id, "dead", Status.DONE, db=db_url)
    # Second death at max_attempts: failed, with a message that says what to do.
    _age_heartbeat(db_url, job_id, 120)
    assert queue.claim_job("alive", stale_after_s=60, db=db_url) is None
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed"
    assert "stopped responding" in job.message and f"ia3 jobs retry {job_id}" in job.message


def test_fresh_heartbeat_keeps_a_running_job(db_url, spec):
    job_id = queue.enqueue(spec, db=db_url)
    queue.claim_job("w1", db=db_url)
    assert queue.heartbeat(job_id, "w1", db=db_url) is False
    assert queue.claim_job("w2", stale_after_s=60, db=db_url) is None
    assert queue.get_job(job_id, db=db_url).worker == "w1"


def test_step_events_update_progress_and_store_json_safe_values(db_url, spec):
    job_id = queue.enqueue(spec, db=db_url)
    queue.claim_job("w1", db=db_url)
    event = {"type": "step", "time": 1.7e9, "step": 2, "total_steps": 3, "loss": 0.5}
    assert queue.record_event(job_id, "w1", 1, event | {"eta_s": 4.0}, db=db_url)
    assert queue.record_event(job_id, "w1", 1, event | {"step": 3, "loss": float("nan")}, db=db_url)
    job = queue.get_job(job_id, db=db_url)
    assert (job.step, job.total_steps, job.loss, job.eta_s) == (3, 3, 0.5, 4.0)
    events = queue.job_events(job_id, db=db_url)
    assert [e.data["step"] for e in events] == [2, 3] and events[1].data["loss"] is None
    assert events[0].time.timestamp() == pytest.approx(1.7e9)
    assert [e.id for e in queue.job_events(job_id, after_id=events[0].id, db=db_url)] == [
        events[1].id
    ]


def test_uploaded_dataset_survives_the_original_file(db_url, spec, tmp_path):
    job_id = queue.enqueue(spec, upload_data=True, db=db_url)
    again = queue.enqueue(spec, upload_data=True, db=db_url)
    job = queue.get_job(job_id, db=db_url)
    assert job.data_blob_id is not None
    assert queue.get_job(again, db=db_url).data_blob_id == job.data_blob_id  # deduplicated
    original = spec.data
    content = open(original, "rb").read()
    (tmp_path / "reviews.csv").unlink()
    copy = blobs.materialise_dataset(job.data_blob_id, db=db_url)
    assert copy.name == "reviews.csv" and copy.read_bytes() == content


def test_dataset_over_the_cap_is_refused(db_url, spec, monkeypatch):
    monkeypatch.setenv("IA3_MAX_DATASET_BYTES", "10")
    with pytest.raises(DataError, match="IA3_MAX_DATASET_BYTES"):
        queue.enqueue(spec, upload_data=True, db=db_url)
    with reading(db_url) as conn:
        assert conn.scalar(select(func.count()).select_from(Job)) == 0


def test_the_job_time_limit_reads_minutes_and_refuses_nonsense():
    assert job_seconds({}) == DEFAULT_MINUTES * 60
    assert job_seconds({}, defaults=False) is None  # the local user: only an explicit limit
    assert job_seconds({VARIABLE: "0.5"}, defaults=False) == 30.0
    assert job_seconds({VARIABLE: " none "}) is None
    for bad in ("0", "-3", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match=VARIABLE):
            job_seconds({VARIABLE: bad})


def test_the_time_limit_is_kept_with_the_job(db_url, spec):
    job_id = queue.enqueue(spec, max_seconds=90, db=db_url)
    assert queue.get_job(job_id, db=db_url).max_seconds == 90.0
    assert queue.get_job(queue.enqueue(spec, db=db_url), db=db_url).max_seconds is None
    with pytest.raises(JobError, match="max_seconds"):
        queue.enqueue(spec, max_seconds=0, db=db_url)
