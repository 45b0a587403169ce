"""`ia3 studio`: start the web studio with embedded worker processes.

The workers are separate processes on the same database, so training never runs in the
page's process; `--no-worker` gives a studio that only enqueues (workers run elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Register `studio` on the `ia3` command's subparsers."""
    parser = subparsers.add_parser(
        "studio",
        help="start the web studio (train, follow jobs, try and download adapters)",
        description="Start IA3 Studio in the browser, with one embedded worker by default.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        help="where the database, uploads and logs live (default: $IA3_DATA_DIR or ./ia3-data)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes to start (default 1)"
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="start no worker: the studio only enqueues jobs"
    )
    parser.add_argument("--device", help="device for the workers, e.g. cuda:0 (default: best)")
    parser.add_argument("--model", default="minilm", help="model preselected in the Train tab")
    parser.add_argument("--sample", default="sentiment", help="sample dataset preselected")
    parser.set_defaults(func=run_studio)


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
    from jobs.worker import Worker, worker_name

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    Worker(device=device, worker_id=worker_name(os.getpid(), token)).run_forever()


def start_workers(count: int, device: str | None = None):
    """Start `count` worker processes on the studio's database, restarted when they die.

    Returns the jobs.worker_pool.WorkerPool; stop_workers stops it.
    """
    from jobs.worker_pool import WorkerPool

    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    parent = os.getpid()

    def start(token: str):
        process = context.Process(
            target=_embedded_worker, args=(parent, device, token), name="ia3-worker"
        )
        process.start()
        return process

    return WorkerPool(start, count).start()


def _stop_on_sigterm(signum, frame) -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down; the default action would
    # end the process on the spot, before the embedded workers are stopped.
    raise SystemExit(0)


def stop_workers(pool) -> None:
    """Stop the embedded workers (and their restarts); a job they ran goes back to the queue."""
    if pool is not None:
        pool.stop(timeout_s=10)


def _job_time_limit_ok() -> bool:
    """IA3_MAX_JOB_MINUTES is read when a job is queued; a typo must stop the start, not
    every person's Train button."""
    from ia3engine.errors import ConfigError
    from jobs.time_limit import job_seconds

    try:
        job_seconds()
    except ConfigError as exc:
        logger.error("%s", exc)
        return False
    return True


def run_studio(args: argparse.Namespace) -> int:
    from app.main import create_app, serve
    from app.studio_config import StudioConfig
    from ia3engine.errors import ConfigError

    if args.data_dir:
        # Set before any database use and before the workers start, so all of them share it.
        os.environ["IA3_DATA_DIR"] = str(Path(args.data_dir).resolve())
    from app import auth

    if not auth.configure_for_host(args.host):
        return 2  # listening beyond 127.0.0.1 needs an access mode; the log said which
    if not _job_time_limit_ok():
        return 2
    workers = 0 if args.no_worker else max(int(args.workers), 0)
    config = StudioConfig(model=args.model, sample=args.sample, workers=workers)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    pool = start_workers(workers, args.device) if workers else None
    if workers:
        print(f"Started {workers} worker process(es).", flush=True)
    else:
        print("No worker started: jobs wait until `ia3 worker` runs on this database.", flush=True)
    try:  # every setting the page reads (limits, origins, cookies) is checked here, once
        app = create_app(config)
    except ConfigError as error:
        logger.error("%s", error)
        stop_workers(pool)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        serve(app, config, host=args.host, port=args.port)
    finally:
        stop_workers(pool)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m app.studio_cli` = `ia3 studio`, without the other commands' imports."""
    parser = argparse.ArgumentParser(prog="ia3")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["studio", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
