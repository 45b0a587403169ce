"""kill -9 a worker process mid-training: a restarted worker takes the job back once its
heartbeat is stale, resumes from the stored checkpoint, and registers exactly one adapter."""

from __future__ import annotations

import os
import signal
import time

import jobs_support
import pytest
import torch
from train_models import paced_train, save_tiny
from waiting import wait_for

from ia3engine.training.spec import TrainSpec
from jobs import blobs, queue, registry
from jobs.worker import Worker, start_worker_process

STEPS, EVERY = 40, 5


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the spawned worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_worker_job_resumes_from_checkpoint_with_one_adapter(db_url, tmp_path, one_thread):
    base = save_tiny("bert", tmp_path / "tiny-bert")
    data = jobs_support.write_reviews(tmp_path / "reviews.csv")
    spec = TrainSpec(
        model=base, data=data, steps=STEPS, batch_size=8, max_length=16, eval_every=EVERY
    )
    job_id = queue.enqueue(spec, db=db_url)
    process = start_worker_process(
        db_url,
        heartbeat_s=0.5,
        step_event_s=0,
        train_fn=paced_train,
        worker_id="doomed",
    )
    try:
        wait_for(lambda: blobs.checkpoint_step(job_id, db=db_url), 180, "a stored checkpoint")
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
    killed_at = queue.get_job(job_id, db=db_url)
    assert killed_at.status == "running" and killed_at.step < STEPS  # died mid-training
    resume_from = blobs.checkpoint_step(job_id, db=db_url)

    time.sleep(1.5)  # let the dead worker's heartbeat go stale
    restarted = Worker(db_url, stale_after_s=1.0, step_event_s=0, worker_id="restarted")
    assert restarted.run_one()

    job = queue.get_job(job_id, db=db_url)
    assert (job.status, job.attempts, job.worker) == ("done", 2, "restarted"), job.message
    adapters = registry.list_adapters(db=db_url)
    assert [a.job_id for a in adapters] == [job_id] and job.adapter_id == adapters[0].id

    events = queue.job_events(job_id, db=db_url)
    steps = {1: [], 2: []}
    for event in events:
        if event.type == "step":
            steps[event.attempt].append(event.data["step"])
    assert steps[1] == list(range(1, len(steps[1]) + 1))  # no gaps before the kill
    assert steps[2] == list(range(resume_from + 1, STEPS + 1))  # on from the checkpoint
    assert max(steps[1]) >= resume_from
    requeued = [e for e in events if e.type == "log" and "stopped responding" in str(e.data)]
    assert requeued and "doomed" in requeued[0].data["message"]
    started = [e for e in events if e.type == "started" and e.attempt == 2]
    assert started[0].data["resumed"] and started[0].data["step"] == resume_from
