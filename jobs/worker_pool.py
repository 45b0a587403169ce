"""Worker processes that are restarted when they die: the studio's embedded workers.

A worker killed for memory or crashed in native code cannot report its job; the pool does,
ending that job as failed with a message a person understands, and starts a new worker. It
also ends a job that overruns its wall-clock limit without stopping (a hung step or load).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from jobs import queue
from jobs.time_limit import over_time_message
from jobs.worker import worker_name

log = logging.getLogger(__name__)

OUT_OF_MEMORY = (
    "The job ran out of memory (the worker process was killed): lower the batch size or max "
    "length, or use a smaller model, then submit it again."
)
CRASHED = (
    "The worker process crashed while training this job ({how}): this is a fault in native "
    "code, often a memory problem. Lower the batch size or max length, or use a smaller "
    "model, then submit it again."
)


def death_message(exitcode: int | None) -> str:
    """What a person reads about the job of a worker that ended with `exitcode`."""
    if exitcode == -signal.SIGKILL:
        return OUT_OF_MEMORY
    if exitcode is not None and exitcode < 0:
        try:
            how = signal.Signals(-exitcode).name
        except ValueError:
            how = f"signal {-exitcode}"
        return CRASHED.format(how={"SIGSEGV": "a segmentation fault"}.get(how, how))
    return CRASHED.format(how=f"it exited with status {exitcode}")


@dataclass
class _Slot:
    """One worker place in the pool: its current process, id and restart schedule."""

    process: object | None = None
    worker_id: str | None = None
    started: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    job_id: int | None = None  # the job its worker was last seen running, and since when
    job_seen: float = 0.0
    next_look: float = 0.0


class WorkerPool:
    """`count` worker processes from `start(token)`, each watched and restarted when it dies.

    `start` starts a process whose worker takes worker_name(pid, token) as its id, so the pool
    knows which jobs it held. A worker that dies within `healthy_s` of its start waits twice as
    long as the last time before its next start (up to `max_backoff_s`): a crash loop costs
    little. A worker still running a job `grace_s` past the job's own wall-clock limit (it
    stops itself between steps; this is for a step or load that hangs) is killed and the job
    failed. `db`: the database (URL or Engine) the workers use.
    """

    def __init__(
        self,
        start: Callable[[str], object],
        count: int,
        *,
        db=None,
        check_s: float = 0.5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        healthy_s: float = 60.0,
        look_s: float = 5.0,
        grace_s: float = 60.0,
    ):
        self._start, self.db = start, db
        self.check_s, self.healthy_s = check_s, healthy_s
        self.look_s, self.grace_s = look_s, grace_s
        self.first_backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.slots = [_Slot() for _ in range(max(int(count), 0))]
        self.stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def processes(self) -> list:
        return [slot.process for slot in self.slots if slot.process is not None]

    def start(self) -> WorkerPool:
        for slot in self.slots:
            self._launch(slot)
        self._watcher = threading.Thread(target=self._watch, name="ia3-worker-pool", daemon=True)
        self._watcher.start()
        return self

    def _launch(self, slot: _Slot) -> None:
        token = uuid.uuid4().hex[:8]
        process = self._start(token)
        slot.process, slot.worker_id = process, worker_name(process.pid, token)
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("worker %s started", slot.worker_id)

    def _watch(self) -> None:
        while not self.stopping.wait(self.check_s):
            for slot in self.slots:
                try:
                    self.check(slot)
                except Exception:  # the database may be away for a while; look again
                    log.exception("worker pool: could not handle worker %s", slot.worker_id)

    def check(self, slot: _Slot) -> None:
        """Report a dead worker's job, and start its successor when its backoff is over."""
        now = time.monotonic()
        process = slot.process
        if process is not None and process.is_alive() and now >= slot.next_look:
            slot.next_look = now + self.look_s
            self._check_time(slot, now)
        if process is not None and not process.is_alive() and not self.stopping.is_set():
            exitcode = process.exitcode
            log.error("worker %s ended unexpectedly (exit code %s)", slot.worker_id, exitcode)
            queue.fail_worker_jobs(slot.worker_id, death_message(exitcode), db=self.db)
            quick = now - slot.started < self.healthy_s
            slot.backoff_s = (
                min(max(slot.backoff_s * 2, self.first_backoff_s), self.max_backoff_s)
                if quick
                else self.first_backoff_s
            )
            slot.process, slot.restart_at = None, now + slot.backoff_s
            log.warning("worker restarts in %.0f s", slot.backoff_s)
        if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
            if not self.stopping.is_set():
                slot.restarts += 1
                self._launch(slot)

    def _check_time(self, slot: _Slot, now: float) -> None:
        """Kill a worker whose job ran `grace_s` past its limit without stopping by itself."""
        job = queue.running_job(slot.worker_id, db=self.db)
        if job is None or job.id != slot.job_id:
            slot.job_id, slot.job_seen = (None if job is None else job.id), now
            return
        if job.max_seconds is None or now - slot.job_seen <= job.max_seconds + self.grace_s:
            return
        message = over_time_message(job.id, job.max_seconds, job.step, job.total_steps)
        message += " It did not stop by itself, so its worker was restarted."
        queue.fail_worker_jobs(slot.worker_id, message, db=self.db)
        log.error("worker %s overran job %s's time limit; killing it", slot.worker_id, job.id)
        slot.process.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching, then the workers; a job they were running goes back to the queue."""
        self.stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=timeout_s)
        processes = self.processes
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=timeout_s)
            if process.is_alive():
                log.warning("worker %s did not stop in %g s; killing it", process.pid, timeout_s)
                process.kill()
