"""The studio's worker pool without real processes: which job a dead worker's death fails, the
message by exit code, and the backoff that keeps a crash loop from spinning."""

from __future__ import annotations

import signal

import jobs_support

from ia3engine.training.spec import TrainSpec
from jobs import queue
from jobs.worker import worker_name
from jobs.worker_pool import OUT_OF_MEMORY, WorkerPool, death_message


class FakeProcess:
    """Stands in for a multiprocessing.Process: alive until `die` is called."""

    def __init__(self, pid: int):
        self.pid, self.exitcode = pid, None

    def is_alive(self) -> bool:
        return self.exitcode is None

    def die(self, exitcode: int) -> None:
        self.exitcode = exitcode

    def terminate(self) -> None:
        self.exitcode = -signal.SIGTERM

    def kill(self) -> None:
        self.exitcode = -signal.SIGKILL

    def join(self, timeout=None) -> None:
        pass


def _pool(db_url, **options):
    started: list[tuple[FakeProcess, str]] = []

    def start(token: str) -> FakeProcess:
        process = FakeProcess(1000 + len(started))
        started.append((process, token))
        return process

    pool = WorkerPool(start, 1, db=db_url, **options)
    for slot in pool.slots:
        pool._launch(slot)  # as start() does, without the watching thread
    return pool, started


def test_death_messages_say_what_happened_and_what_to_do():
    assert death_message(-signal.SIGKILL) == OUT_OF_MEMORY
    assert "segmentation fault" in death_message(-signal.SIGSEGV)
    assert "exited with status 1" in death_message(1)
    for code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, 3):
        assert "batch size" in death_message(code)


def test_a_dead_worker_fails_only_its_own_job(db_url, tmp_path):
    spec = TrainSpec(model="m", data=jobs_support.write_reviews(tmp_path / "r.csv"), steps=2)
    pool, started = _pool(db_url)
    slot = pool.slots[0]
    mine, other = queue.enqueue(spec, db=db_url), queue.enqueue(spec, db=db_url)
    assert queue.claim_job(slot.worker_id, db=db_url).id == mine
    # Another worker, on the same pid after a restart, holds the second job.
    assert queue.claim_job(worker_name(started[0][0].pid, "other"), db=db_url).id == other
    started[0][0].die(-signal.SIGKILL)
    pool.check(slot)
    assert (queue.get_job(mine, db=db_url).status, queue.get_job(other, db=db_url).status) == (
        "failed",
        "running",
    )
    assert queue.get_job(mine, db=db_url).message == OUT_OF_MEMORY


def test_a_crash_loop_backs_off_and_a_healthy_worker_resets_it(db_url, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("jobs.worker_pool.time.monotonic", lambda: clock[0])
    pool, started = _pool(db_url, backoff_s=1.0, max_backoff_s=8.0, healthy_s=60.0)
    slot = pool.slots[0]
    waits = []
    for _ in range(5):  # dies at once, every time
        started[-1][0].die(-signal.SIGSEGV)
        pool.check(slot)
        waits.append(slot.backoff_s)
        pool.check(slot)
        assert slot.process is None  # not restarted before its wait is over
        clock[0] += slot.backoff_s
        pool.check(slot)
        assert slot.process is started[-1][0] and slot.process.is_alive()
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert len({token for _, token in started}) == len(started) == 6  # a new id each time
    clock[0] += 120  # a worker that lived long was healthy: its next restart is quick
    started[-1][0].die(-signal.SIGKILL)
    pool.check(slot)
    assert slot.backoff_s == 1.0
    pool.stop()
    assert all(not process.is_alive() for process in pool.processes)


def test_a_worker_hung_past_its_jobs_time_limit_is_killed(db_url, tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("jobs.worker_pool.time.monotonic", lambda: clock[0])
    spec = TrainSpec(model="m", data=jobs_support.write_reviews(tmp_path / "r.csv"), steps=2)
    pool, started = _pool(db_url, look_s=1.0, grace_s=5.0)
    slot = pool.slots[0]
    job_id = queue.enqueue(spec, max_seconds=10, db=db_url)
    assert queue.claim_job(slot.worker_id, db=db_url).id == job_id
    for _ in range(15):  # within the limit and its grace: left alone
        clock[0] += 1.0
        pool.check(slot)
    assert queue.get_job(job_id, db=db_url).status == "running" and slot.process.is_alive()
    clock[0] += 1.5  # 16.5 s after the job was first seen running: hung past limit + grace
    pool.check(slot)
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and "IA3_MAX_JOB_MINUTES" in job.message
    assert not started[0][0].is_alive()
    pool.check(slot)  # the death of a worker it killed fails nothing else; it restarts
    clock[0] += slot.backoff_s
    pool.check(slot)
    assert slot.process is started[-1][0] and len(started) == 2
    assert queue.get_job(job_id, db=db_url).message == job.message
