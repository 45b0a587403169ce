"""The worker: claims jobs, heartbeats, runs them with a warm base model cache.

Run it as `ia3 worker [--device cuda:1]`, several per machine and on many machines against
one database; a job whose worker dies goes back to the queue and resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import uuid
from collections.abc import Callable

from ia3engine.serve.predict_file import predict_file
from ia3engine.training.loading import BaseCache
from ia3engine.training.run import train
from jobs import queue
from jobs.db import resolve
from jobs.job_run import JobRun
from jobs.predict_jobs import KIND as PREDICT
from jobs.predict_run import PredictRun
from jobs.status import FINISHED

log = logging.getLogger(__name__)


def worker_name(pid: int, token: str) -> str:
    """A worker's id: this machine, its process id and a random token, so no two workers
    (not even a restarted one that got the same pid) ever share an id."""
    return f"{socket.gethostname()}:{pid}:{token}"


class Worker:
    """Takes queued jobs one at a time and keeps the last base model loaded between them.

    stale_after_s: a running job without a heartbeat for this long is taken back (and
    heartbeat_s must be well below it); cancel_poll_s: how often a cancel is looked for;
    step_event_s: at most one stored step event per this many seconds (0 = every step).
    A job of kind "predict" runs predict_fn over its file (jobs/predict_run.py); every other
    job trains with train_fn.
    """

    def __init__(
        self,
        db_url: str | None = None,
        device: str | None = None,
        worker_id: str | None = None,
        poll_s: float = 0.5,
        *,
        stale_after_s: float = 60.0,
        heartbeat_s: float = 5.0,
        cancel_poll_s: float = 0.5,
        step_event_s: float = 0.5,
        train_fn: Callable | None = None,
        predict_fn: Callable | None = None,
    ):
        self.engine = resolve(db_url)
        self.device = device
        self.worker_id = worker_id or worker_name(os.getpid(), uuid.uuid4().hex[:6])
        self.poll_s, self.stale_after_s = poll_s, stale_after_s
        self.heartbeat_s, self.cancel_poll_s = heartbeat_s, cancel_poll_s
        self.step_event_s = step_event_s
        self.train_fn = train_fn or train
        self.predict_fn = predict_fn or predict_file  # predict jobs (kind "predict")
        self.base_cache = BaseCache()
        self.stopping = threading.Event()

    def run_one(self) -> bool:
        """Claim and run one job; False when the queue had nothing to run."""
        job = queue.claim_job(self.worker_id, stale_after_s=self.stale_after_s, db=self.engine)
        if job is None:
            return False
        run = (PredictRun if job.kind == PREDICT else JobRun)(self, job)
        beat = threading.Thread(target=self._heartbeat, args=(run,), daemon=True)
        beat.start()
        try:
            status = run.run()
            log.info("job %s: %s", job.id, status)
        except Exception:  # the database itself failed; the job goes stale and is retried
            log.exception("job %s: could not be recorded; it will be retried", job.id)
        finally:
            run.done.set()
            beat.join()
        return True

    def run_forever(self, stop: threading.Event | None = None, *, once: bool = False) -> None:
        """Run jobs until `stop` is set (or after one job with once=True)."""
        stop = stop or self.stopping
        self.stopping = stop
        log.info("worker %s started (device %s)", self.worker_id, self.device or "auto")
        while not stop.is_set():
            try:
                ran = self.run_one()
            except Exception:  # e.g. the database is briefly unreachable: wait and go on
                log.exception("worker %s: claiming failed; trying again", self.worker_id)
                ran = False
            if once:
                break
            if not ran:
                stop.wait(self.poll_s)
        self.base_cache.clear()
        log.info("worker %s stopped", self.worker_id)

    def _heartbeat(self, run) -> None:
        """While the job runs: refresh the heartbeat and pass on cancel requests."""
        since_beat = 0.0
        while not run.done.wait(self.cancel_poll_s):
            since_beat += self.cancel_poll_s
            try:
                if since_beat >= self.heartbeat_s:
                    since_beat = 0.0
                    state = queue.heartbeat(run.job.id, self.worker_id, db=self.engine)
                    if state is None:
                        if run.done.is_set() or self._finished_here(run):
                            return  # this worker finished it between the wait and the beat
                        log.warning("job %s: taken over by another worker", run.job.id)
                        run.lost.set()
                        return
                else:
                    state = queue.cancel_requested(run.job.id, db=self.engine)
                if state:
                    run.cancelled.set()
            except Exception:  # a missed beat is harmless; many in a row make the job stale
                log.warning("job %s: heartbeat failed", run.job.id, exc_info=True)

    def _finished_here(self, run) -> bool:
        job = queue.get_job(run.job.id, db=self.engine)
        return job.worker == self.worker_id and job.status in FINISHED


def _process_main(db_url, device, options) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    Worker(db_url, device, **options).run_forever()


def start_worker_process(
    db_url: str | None = None, device: str | None = None, **options
) -> multiprocessing.Process:
    """A worker in its own (spawned) process; options go to Worker (e.g. stale_after_s)."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_process_main, args=(db_url, device, options), name="ia3-worker", daemon=False
    )
    process.start()
    return process
