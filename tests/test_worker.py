"""The worker with real training on a tiny model, on SQLite and PostgreSQL: registration,
the warm base cache, cancel and retry from the checkpoint, and bad jobs that fail clearly
while the worker lives on."""

from __future__ import annotations

import errno
import threading

import pytest
import torch
from jobs_support import small_spec
from sqlalchemy import insert
from waiting import wait_for

from ia3engine.training.run import train
from jobs import blobs, queue, registry
from jobs.db import writing
from jobs.models import Job
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_worker_trains_registers_and_keeps_the_base_warm(db_url, tiny_bert, reviews):
    first = queue.enqueue(small_spec(tiny_bert, reviews, name="first"), owner="ann", db=db_url)
    second = queue.enqueue(small_spec(tiny_bert, reviews, name="second", seed=1), db=db_url)
    worker = Worker(db_url, step_event_s=0)
    assert worker.run_one() and worker.run_one() and not worker.run_one()
    assert worker.base_cache.loads == 1  # the second job reused the loaded base
    for job_id, name, owner in ((first, "first", "ann"), (second, "second", None)):
        job = queue.get_job(job_id, db=db_url)
        assert job.status == "done", job.message
        assert f"adapter {job.adapter_id}" in job.message
        adapter = registry.get_adapter(job.adapter_id, db=db_url)
        assert (adapter.name, adapter.owner, adapter.job_id) == (name, owner, job_id)
        assert adapter.labels == ["neg", "pos"] and adapter.dataset_fingerprint
        kinds = [e.type for e in queue.job_events(job_id, db=db_url)]
        # data notes (here: every row trains, none held back) are logged before the start
        assert [k for k in kinds if k != "log"][0] == "started" and "finished" in kinds
        steps = [e.data["step"] for e in queue.job_events(job_id, db=db_url) if e.type == "step"]
        assert steps == list(range(1, 7))
        assert blobs.checkpoint_step(job_id, db=db_url) is None  # dropped once done
    folder = registry.adapter_folder(queue.get_job(first, db=db_url).adapter_id, db=db_url)
    assert (folder / "adapter_model.safetensors").is_file()


def _pause_after_first_step(spec, on_event, should_stop, **kwargs):
    """Real training that, after its first step, waits until the worker asks it to stop:
    the cancel then lands at a known step however fast or slow the machine is."""

    def gated(event):
        on_event(event)
        if event["type"] == "step" and event["step"] == 1:
            wait_for(should_stop, what="the cancel to reach should_stop")

    return train(spec, on_event=gated, should_stop=should_stop, **kwargs)


def test_cancel_stops_at_the_next_step_keeps_checkpoint_and_retry_resumes(
    db_url, tiny_bert, reviews
):
    job_id = queue.enqueue(small_spec(tiny_bert, reviews, steps=12, eval_every=0), db=db_url)
    worker = Worker(db_url, step_event_s=0, cancel_poll_s=0.1, train_fn=_pause_after_first_step)
    runner = threading.Thread(target=worker.run_one)
    runner.start()
    wait_for(lambda: queue.get_job(job_id, db=db_url).step, what="the first step")
    queue.cancel_job(job_id, db=db_url)
    runner.join(60)
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "cancelled" and f"ia3 jobs retry {job_id}" in job.message
    assert blobs.checkpoint_step(job_id, db=db_url) == 1  # stopped before step 2
    assert job.adapter_id is None and registry.list_adapters(db=db_url) == []

    queue.retry_job(job_id, db=db_url)
    assert worker.run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "done" and job.attempts == 2
    second = [e for e in queue.job_events(job_id, db=db_url) if e.attempt == 2]
    started = next(e for e in second if e.type == "started")
    assert started.data["resumed"] and started.data["step"] == 1
    assert [e.data["step"] for e in second if e.type == "step"] == list(range(2, 13))


def test_a_stopping_worker_puts_its_job_back_with_a_checkpoint(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(small_spec(tiny_bert, reviews, steps=12, eval_every=0), db=db_url)
    worker = Worker(db_url, step_event_s=0, train_fn=_pause_after_first_step)
    runner = threading.Thread(target=worker.run_one)
    runner.start()
    wait_for(lambda: queue.get_job(job_id, db=db_url).step, what="the first step")
    worker.stopping.set()  # what SIGTERM does in `ia3 worker`
    runner.join(60)
    job = queue.get_job(job_id, db=db_url)
    assert (job.status, job.attempts) == ("queued", 0)
    assert blobs.checkpoint_step(job_id, db=db_url) == 1
    assert Worker(db_url).run_one() and queue.get_job(job_id, db=db_url).status == "done"


def _raw_job(url, spec: dict) -> int:
    """A job row written around enqueue's validation (e.g. by an older version)."""
    with writing(url) as conn:
        return conn.scalar(
            insert(Job)
            .values(status="queued", spec=spec, priority=0, attempts=0, cancel_requested=False)
            .returning(Job.id)
        )


def test_bad_jobs_fail_with_clear_messages_and_the_worker_lives_on(
    db_url, tiny_bert, reviews, tmp_path, monkeypatch
):
    good = small_spec(tiny_bert, reviews)
    malformed = _raw_job(db_url, good.to_dict() | {"steps": "many", "lr": -1})
    unknown = queue.enqueue(small_spec("nobody/no-such-model-xyz", reviews), db=db_url)
    vanishing = tmp_path / "vanishing.csv"
    vanishing.write_text(open(reviews).read())
    gone = queue.enqueue(small_spec(tiny_bert, str(vanishing)), db=db_url)
    vanishing.unlink()
    full = queue.enqueue(good, db=db_url)
    worker = Worker(db_url, step_event_s=0)
    for _ in range(3):
        assert worker.run_one()

    def no_space(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", no_space)  # checkpoints are written with torch.save
        assert worker.run_one()
    last = queue.enqueue(good, db=db_url)
    assert worker.run_one()

    def message(job_id):
        job = queue.get_job(job_id, db=db_url)
        assert job.status == "failed"
        return job.message

    assert "steps" in message(malformed) and "lr" in message(malformed)
    assert "Could not load model 'nobody/no-such-model-xyz'" in message(unknown)
    assert "does not exist" in message(gone) and f"ia3 jobs retry {gone}" in message(gone)
    assert "disk is full" in message(full) and "IA3_DATA_DIR" in message(full)
    assert queue.get_job(last, db=db_url).status == "done"
    failed = [e for e in queue.job_events(full, db=db_url) if e.type == "failed"]
    assert failed and failed[0].data["level"] == "error"


def test_crash_outside_ia3_errors_logs_the_traceback(db_url, tiny_bert, reviews):
    def broken_train(spec, **kwargs):
        raise ZeroDivisionError("division by zero")

    job_id = queue.enqueue(small_spec(tiny_bert, reviews), db=db_url)
    assert Worker(db_url, train_fn=broken_train).run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed"
    assert "ZeroDivisionError" in job.message and f"ia3 jobs logs {job_id}" in job.message
    failed = next(e for e in queue.job_events(job_id, db=db_url) if e.type == "failed")
    assert "Traceback" in failed.data["traceback"] and "broken_train" in failed.data["traceback"]


def test_the_worker_device_reaches_training(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(small_spec(tiny_bert, reviews, device="cpu"), db=db_url)
    missing = f"cuda:{torch.cuda.device_count() + 7}"  # a GPU this machine does not have
    assert Worker(db_url, device=missing).run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and missing in job.message  # the worker's device won
