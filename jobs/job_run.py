"""One claimed job from start to finish: prepare its files, train, register, report.

Failures end as a failed job whose message says what to do; the traceback of anything
unexpected goes to the job's events and log file, and the worker carries on.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import threading
import time
import traceback

from ia3engine.errors import IA3Error, SpecError
from ia3engine.training.spec import default_name
from jobs import blobs, queue, registry
from jobs.db import data_dir, retried, writing
from jobs.specs import spec_from_dict
from jobs.status import Status
from jobs.time_limit import over_time_message

log = logging.getLogger(__name__)
# A path on the server (/srv/data/x.csv, ./ia3-data/jobs/3, ~/models/m): in a message a
# person reads, only its last part is kept. Hub ids (owner/name) and URLs are left alone.
_SERVER_PATH = re.compile(r"(?<![\w./:~-])(?:~|\.{1,2})?(?:/[^\s/'\"`,;:()\[\]]+)+/?")


class LostJob(Exception):
    """This worker no longer holds the job (its heartbeat went stale and another took it)."""


class JobRun:
    """Runs `job` for `worker` (a jobs.worker.Worker): its cache, device and settings."""

    WORK = "Training"  # what crashed, in a failure message

    def __init__(self, worker, job: queue.JobInfo):
        self.worker, self.job, self.db = worker, job, worker.engine
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.timed_out = threading.Event()  # ran past the job's wall-clock limit
        self.done = threading.Event()  # set when the run is over: the heartbeat stops
        # The wall-clock limit counts from the claim, loading included (monotonic: a clock
        # change on this machine neither shortens nor lengthens it).
        limit = job.max_seconds
        self.deadline = None if limit is None else time.monotonic() + float(limit)
        self.folder = data_dir() / "jobs" / str(job.id) / f"attempt-{job.attempts}"
        self.checkpoint_dir = self.folder / "checkpoint"
        self._pending_step: dict | None = None
        self._last_step_write = 0.0

    # The parts a heartbeat thread and the training loop share ---------------------------

    def should_stop(self) -> bool:
        self.check_time()
        return (
            self.cancelled.is_set()
            or self.lost.is_set()
            or self.timed_out.is_set()
            or self.worker.stopping.is_set()
        )

    def check_time(self) -> bool:
        """True (and remembered) once the job has run past its wall-clock limit."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out.set()
        return self.timed_out.is_set()

    def on_event(self, event: dict) -> None:
        """Training's callback: step events throttled, the last one kept for the next write."""
        kind = event.get("type")
        now = time.monotonic()
        if kind == "step":
            last = event.get("step") == event.get("total_steps")
            if not last and now - self._last_step_write < self.worker.step_event_s:
                self._pending_step = event
                return
            self._pending_step = None
            self._last_step_write = now
            self._write(event)
            return
        if kind == "failed":
            return  # the worker writes its own, more helpful, failure message
        self._flush_step()
        if kind == "checkpoint" and event.get("path"):
            owned = queue.record_checkpoint(
                self.job.id,
                self.worker.worker_id,
                self.job.attempts,
                event,
                self.checkpoint_dir,
                db=self.db,
            )
            if not owned:
                self.lost.set()
            return
        self._write(event)

    def _flush_step(self) -> None:
        if self._pending_step is not None:
            event, self._pending_step = self._pending_step, None
            self._write(event)

    def _write(self, event: dict) -> None:
        job = self.job
        if not queue.record_event(job.id, self.worker.worker_id, job.attempts, event, db=self.db):
            self.lost.set()

    # The run -----------------------------------------------------------------------------

    def run(self) -> str:
        """Train the job and record how it ended; returns the final status (or 'lost')."""
        handler = self._open_log()
        try:
            return self._run()
        finally:
            # Only now does the heartbeat stop: registering a big adapter may take a while,
            # and a job without heartbeats then would be taken (and trained) again.
            self.done.set()
            logging.getLogger().removeHandler(handler)
            handler.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self) -> str:
        job = self.job
        log.info(
            "job %s: attempt %s of %s on %s",
            job.id,
            job.attempts,
            job.max_attempts,
            self.worker.worker_id,
        )
        return self._guarded(self._train)

    def _train(self) -> str:
        spec = self._prepare()
        result = self.worker.train_fn(
            spec,
            on_event=self.on_event,
            should_stop=self.should_stop,
            checkpoint_dir=str(self.checkpoint_dir),
            base_cache=self.worker.base_cache,
        )
        self._flush_step()
        return self._finish(result)

    def _guarded(self, work) -> str:
        """Run `work` (the job's own part, returning its outcome) so that every failure ends
        the job: a lost claim is "lost", a stopping worker puts the job back, any other error
        fails it with a message."""
        try:
            return work()
        except LostJob:
            return "lost"
        except (KeyboardInterrupt, SystemExit):
            queue.release_job(
                self.job.id, self.worker.worker_id, "Worker stopped; back in the queue.", db=self.db
            )
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must end the job
            self._flush_step()
            if self.lost.is_set():
                return "lost"
            return self._fail(exc)

    def _prepare(self):
        """The job's TrainSpec with this machine's paths; its checkpoint restored."""
        job = self.job
        spec_dict = dict(job.spec)
        for field, blob_id in (("data", job.data_blob_id), ("eval_data", job.eval_blob_id)):
            if blob_id is not None:
                spec_dict[field] = str(retried(blobs.materialise_dataset)(blob_id, db=self.db))
        spec = spec_from_dict(spec_dict)
        try:
            spec.validate()
        except SpecError as exc:
            raise SpecError([*exc.problems, self._missing_data_hint(exc)]) from None
        spec.out_dir = str(self.folder / "adapter")
        if self.worker.device is not None:
            spec.device = self.worker.device
        step = retried(blobs.restore_checkpoint)(job.id, self.checkpoint_dir, db=self.db)
        if step is not None:
            self._write({"type": "log", "message": f"Resuming from the checkpoint at step {step}."})
        return spec

    def _missing_data_hint(self, exc: SpecError) -> str:
        if any("does not exist" in p for p in exc.problems):
            return (
                f"The file was there when job {self.job.id} was queued; it must also exist on "
                f"worker {self.worker.worker_id}. Put it back and run `ia3 jobs retry "
                f"{self.job.id}`, or submit again with --upload-data to keep it in the database."
            )
        return "Fix the spec and submit the job again."

    def _finish(self, result) -> str:
        job, worker_id = self.job, self.worker.worker_id
        if self.lost.is_set():
            return "lost"
        if result.stopped and self.timed_out.is_set() and not self.cancelled.is_set():
            steps = job.spec.get("steps") or result.steps
            self._end(
                Status.FAILED, over_time_message(job.id, job.max_seconds, result.steps, steps)
            )
            return Status.FAILED
        if result.stopped and self.cancelled.is_set():
            message = (
                f"Cancelled at step {result.steps} of {job.spec.get('steps') or result.steps}. "
                f"The last checkpoint is kept: `ia3 jobs retry {job.id}` resumes from it."
            )
            self._end(Status.CANCELLED, message)
            return Status.CANCELLED
        if result.stopped:  # the worker itself is shutting down: someone else continues
            queue.release_job(job.id, worker_id, "Worker shut down; back in the queue.", db=self.db)
            return Status.QUEUED
        adapter_id = self._register(result)
        log.info("job %s: done, adapter %s", job.id, adapter_id)
        return Status.DONE

    @retried  # one transaction: a passing database error rolls all of it back, then again
    def _register(self, result) -> int:
        job, worker_id = self.job, self.worker.worker_id
        files = registry.read_folder(result.adapter_dir)
        with writing(self.db) as conn:
            adapter_id = registry.register_files(
                conn,
                files,
                name=_name(job),
                owner=job.owner,
                job_id=job.id,
                base_model=result.base_model,
                trainable_params=result.trainable_params,
                metrics=result.metrics,
            )
            message = f"Done in {result.train_seconds:.0f} s: adapter {adapter_id}." + _metric(
                result.metrics
            )
            finished = queue.finish_job(
                conn,
                job.id,
                worker_id,
                Status.DONE,
                message,
                adapter_id=adapter_id,
                insights=getattr(result, "insights", None),
                attempt=job.attempts,
            )
            if not finished:
                raise LostJob()  # rolls back the registration: the job's new owner registers
            blobs.drop_checkpoint(conn, job.id)
        return adapter_id

    def _fail(self, exc: Exception) -> str:
        message = failure_message(exc, self.job.id, self.worker.device, self.WORK)
        details = {"message": message, "level": "error"}
        if not isinstance(exc, IA3Error):
            details["traceback"] = "".join(traceback.format_exception(exc))
            log.error("job %s failed:\n%s", self.job.id, details["traceback"])
        else:
            log.error("job %s failed: %s", self.job.id, message)
        if isinstance(exc, MemoryError) or not isinstance(exc, IA3Error):
            self.worker.base_cache.clear()  # the cached model may be half-changed or too big
        try:
            queue.record_event(
                self.job.id,
                self.worker.worker_id,
                self.job.attempts,
                {"type": "failed", **details},
                db=self.db,
            )
        finally:
            self._end(Status.FAILED, message)
        return Status.FAILED

    def _end(self, status: Status, message: str) -> None:
        queue.finish(
            self.job.id,
            self.worker.worker_id,
            status,
            message,
            attempt=self.job.attempts,
            db=self.db,
        )

    def _open_log(self) -> logging.Handler:
        """Everything logged while the job runs also goes to <data dir>/logs/job-<id>.log."""
        path = data_dir() / "logs" / f"job-{self.job.id}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:  # a full disk must not stop the job from being reported
            log.warning("job %s: cannot open its log file %s (%s)", self.job.id, path, exc)
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        return handler


def _name(job: queue.JobInfo) -> str:
    return job.spec.get("name") or default_name(job.spec.get("data", ""), job.spec.get("model"))


def _metric(metrics: dict | None) -> str:
    shown = [f"{k} {v:.3f}" for k, v in (metrics or {}).items() if isinstance(v, float)][:2]
    return f" ({', '.join(shown)})" if shown else ""


def without_paths(text: str) -> str:
    """`text` with every server path cut to its last part (the file or folder name)."""
    return _SERVER_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def failure_message(
    exc: BaseException, job_id: int, device: str | None, work: str = "Training"
) -> str:
    """What a person reads when a job fails: the problem, then what to do about it; never a
    path on the server (the full text is in the job's log)."""
    return without_paths(_failure_message(exc, job_id, device, work))


def _failure_message(exc: BaseException, job_id: int, device: str | None, work: str) -> str:
    retry = f"then run `ia3 jobs retry {job_id}`"
    if isinstance(exc, IA3Error):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (
            f"The disk is full (no space left on device){where}. Free some space in the data "
            f"directory or point IA3_DATA_DIR at a larger disk, {retry}."
        )
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (
            f"Out of memory on {device or 'this worker'}. Use a smaller batch_size or "
            f"max_length, 8bit/4bit quantization, or a smaller model; {retry}."
        )
    first = (str(exc).splitlines() or [""])[0][:300]
    return (
        f"{work} crashed with {type(exc).__name__}: {first}. The traceback is in the job's "
        f"log (`ia3 jobs logs {job_id}`); fix the cause and retry the job."
    )
