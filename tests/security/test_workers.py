"""A studio whose worker is killed under a job: for memory (SIGKILL) or by a native crash
(SIGSEGV). The job ends failed with a message a person understands, the studio starts a new
worker, and the jobs queued behind it run.

One studio (a real `ia3 studio` process with password sign-in and one embedded worker) serves
the module; ann and bob train on the shipped sentiment sample with the bundled MiniLM.
"""

from __future__ import annotations

import os
import signal

import pytest
from attack_support import running_studio
from studio_support import alive, children
from waiting import wait_for

LONG = {"model": "minilm", "data": "sentiment", "steps": 3000, "eval_every": 0, "max_length": 32}
SHORT = {"model": "minilm", "data": "sentiment", "steps": 2, "eval_every": 0, "max_length": 32}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("workers-studio"), workers=1) as attacked:
        yield attacked


def _training_worker(client, job: int) -> int:
    """The pid of the worker once it is past step 1 of `job` (from the job's worker id)."""

    def training():
        status = client.predict(job, api_name="/job_status")
        return status["status"] == "running" and (status["step"] or 0) >= 1 and status

    status = wait_for(training, 240, f"job {job} to train", poll_s=0.5)
    return int(status["worker"].split(":")[1])


def _kill_under_a_job(studio, client, sig: int) -> tuple[int, int, dict]:
    """Start a long job and a short one behind it, kill the worker with `sig` mid-training;
    returns (long job, short job, the long job's status once it ended)."""
    long_job = client.predict(LONG, None, None, api_name="/enqueue")
    short_job = client.predict(SHORT, None, None, api_name="/enqueue")
    pid = _training_worker(client, long_job)
    assert pid in children(studio.process.pid)  # an embedded worker of this studio
    os.kill(pid, sig)

    def ended():
        status = client.predict(long_job, api_name="/job_status")
        return status["status"] not in ("queued", "running") and status

    return (
        long_job,
        short_job,
        wait_for(ended, 60, f"job {long_job} to end after the kill", poll_s=0.5),
    )


def _done_on_a_new_worker(studio, client, job: int, dead_pid: int) -> None:
    def finished():
        status = client.predict(job, api_name="/job_status")
        assert status["status"] in ("queued", "running", "done"), status
        return status["status"] == "done" and status

    status = wait_for(finished, 240, f"job {job} to run on a restarted worker", poll_s=0.5)
    pid = int(status["worker"].split(":")[1])
    assert pid != dead_pid and alive(pid) and pid in children(studio.process.pid)


def test_a_worker_killed_for_memory_fails_its_job_plainly_and_is_replaced(studio):
    ann = studio.client("ann")
    long_job, short_job, status = _kill_under_a_job(studio, ann, signal.SIGKILL)
    dead = int(status["worker"].split(":")[1])
    assert status["status"] == "failed"
    assert "ran out of memory" in status["message"] and "batch size" in status["message"]
    assert str(studio.data) not in status["message"] and "Traceback" not in status["message"]
    # Failed, not requeued to be killed again: the queue moves on to the job behind it.
    _done_on_a_new_worker(studio, ann, short_job, dead)
    assert ann.predict(long_job, api_name="/job_status")["status"] == "failed"
    log = "\n".join(ann.predict(long_job, api_name="/job_log"))
    assert "ran out of memory" in log


def test_a_worker_that_segfaults_fails_its_job_plainly_and_the_queue_moves_on(studio):
    bob = studio.client("bob")
    _, short_job, status = _kill_under_a_job(studio, bob, signal.SIGSEGV)
    assert status["status"] == "failed"
    assert "crashed" in status["message"] and "segmentation fault" in status["message"]
    _done_on_a_new_worker(studio, bob, short_job, int(status["worker"].split(":")[1]))
