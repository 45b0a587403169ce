"""The studio's embedded worker processes: on the studio's database, restarted when they die,
and gone when the studio goes (even when it is killed).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time

from jobs.worker import Worker, worker_name
from jobs.worker_pool import WorkerPool

logger = logging.getLogger(__name__)


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    logger.warning("the studio (pid %s) is gone; its embedded worker stops too", parent_pid)
    # A job cut short here goes back to the queue when its heartbeat goes stale, and resumes
    # from its last checkpoint: the queue's crash recovery.
    os._exit(0)


def _embedded_worker(parent_pid: int, device: str | None, token: str) -> None:
    """A worker process that lives only as long as the studio that started it (even kill -9).

    Its id is worker_name(its pid, `token`): the studio's pool knows it, and so which job a
    worker that died was running."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    Worker(device=device, worker_id=worker_name(os.getpid(), token)).run_forever()


def start_workers(count: int, device: str | None = None):
    """Start `count` worker processes on the studio's database, restarted when they die.

    Returns the jobs.worker_pool.WorkerPool; stop_workers stops it.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    parent = os.getpid()

    def start(token: str):
        process = context.Process(
            target=_embedded_worker, args=(parent, device, token), name="ia3-worker"
        )
        process.start()
        return process

    return WorkerPool(start, count).start()


def stop_workers(pool) -> None:
    """Stop the embedded workers (and their restarts); a job they ran goes back to the queue."""
    if pool is not None:
        pool.stop(timeout_s=10)
