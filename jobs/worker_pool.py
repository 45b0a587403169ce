"""Worker processes that are restarted when they die: the studio's embedded workers.

A worker killed for memory or crashed in native code cannot report its job; the pool does,
ending that job as failed with a message a person understands, and starts a new worker.
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


class WorkerPool:
    """`count` worker processes from `start(token)`, each watched and restarted when it dies.

    `start` starts a process whose worker takes worker_name(pid, token) as its id, so the pool
    knows which jobs it held. A worker that dies within `healthy_s` of its start waits twice as
    long as the last time before its next start (up to `max_backoff_s`): a crash loop costs
    little. `db`: the database (URL or Engine) the workers use.
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
    ):
        self._start, self.db = start, db
        self.check_s, self.healthy_s = check_s, healthy_s
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
