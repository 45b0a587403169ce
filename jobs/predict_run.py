"""One claimed predict job: fetch its file and adapter, predict every row, keep the output.

Progress is rows (step = rows done, total_steps = rows), so the Jobs tab's bar follows it; a
cancel, the wall-clock limit or a stopping worker end it between batches, writing nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ia3engine.data.read import sniff_format
from ia3engine.serve.predict_file import output_format
from ia3engine.training.loading import resolve_device
from jobs import blobs, queue, quota, registry
from jobs.db import retried, writing
from jobs.errors import JobError
from jobs.job_run import JobRun, LostJob
from jobs.status import Status
from jobs.time_limit import VARIABLE

log = logging.getLogger(__name__)


class PredictRun(JobRun):
    """Runs a predict job for `worker` with worker.predict_fn (ia3engine's predict_file)."""

    WORK = "The prediction"

    def __init__(self, worker, job: queue.JobInfo):
        super().__init__(worker, job)
        self._started = time.monotonic()

    def progress(self, done: int, total: int) -> None:
        """predict_file's callback: a step event per batch (rows), throttled like training's."""
        elapsed = time.monotonic() - self._started
        eta = elapsed / done * (total - done) if done else None
        self.on_event({"type": "step", "step": done, "total_steps": total, "eta_s": eta})

    def _run(self) -> str:
        job = self.job
        log.info("job %s: predict attempt %s on %s", job.id, job.attempts, self.worker.worker_id)
        return self._guarded(self._predict)

    def _predict(self) -> str:
        job, spec = self.job, self.job.spec
        data, adapter = self._inputs()
        device = str(resolve_device(self.worker.device))  # the worker's, or the best one
        self._write(
            {
                "type": "started",
                "total_steps": spec.get("rows"),
                "device": device,
                "kind": "predict",
            }
        )
        ext = output_format(_format_of(data))[1]
        out = self.folder / f"{Path(data).stem}.predictions-{job.id}{ext}"
        result = self.worker.predict_fn(
            spec["model"],
            data,
            out,
            adapter=adapter,
            text_column=spec.get("text_column"),
            batch_size=int(spec.get("batch_size") or 16),
            max_rows=spec.get("max_rows"),
            max_new_tokens=int(spec.get("max_new_tokens") or 64),
            device=device,  # the one the log names
            on_progress=self.progress,
            should_stop=self.should_stop,
        )
        self._flush_step()
        return self._finish_prediction(result)

    def _inputs(self) -> tuple[str, str | None]:
        """The input file and adapter folder on this machine, from the database."""
        job = self.job
        if job.data_blob_id is None:
            raise JobError(f"Job #{job.id} has no stored input file; predict the file again.")
        data = str(retried(blobs.materialise_dataset)(job.data_blob_id, db=self.db))
        adapter_id = job.spec.get("adapter_id")
        if adapter_id is None:
            return data, None
        try:
            folder = retried(registry.adapter_folder)(int(adapter_id), db=self.db)
        except Exception as exc:  # deleted after the job was queued
            raise JobError(
                f"Adapter #{adapter_id} is gone (deleted after this job was queued); predict "
                "the file again with another adapter."
            ) from exc
        return data, str(folder)

    def _finish_prediction(self, result) -> str:
        job, worker_id = self.job, self.worker.worker_id
        if self.lost.is_set():
            return "lost"
        where = f"at row {result.rows:,} of {result.total_rows:,}"
        if result.stopped and self.timed_out.is_set() and not self.cancelled.is_set():
            self._end(
                Status.FAILED,
                f"The prediction ran longer than this studio allows ({_minutes(job.max_seconds)}, "
                f"{VARIABLE}) and was stopped {where}; nothing was written. Predict a smaller "
                "file, or use a smaller model.",
            )
            return Status.FAILED
        if result.stopped and self.cancelled.is_set():
            self._end(Status.CANCELLED, f"Cancelled {where}; nothing was written.")
            return Status.CANCELLED
        if result.stopped:  # the worker itself is shutting down: someone else predicts
            queue.release_job(job.id, worker_id, "Worker shut down; back in the queue.", db=self.db)
            return Status.QUEUED
        path = Path(result.out_path)
        quota.check(job.owner, path.stat().st_size)  # over it: the job fails saying so
        message = f"Predicted {result.rows:,} rows in {result.seconds:.0f} s."
        if result.warnings:
            message += " " + " ".join(result.warnings[:2])
        self._keep(path, message)
        log.info("job %s: done, %s rows predicted", job.id, result.rows)
        return Status.DONE

    @retried  # one transaction: the file is kept only with the job done, never one without
    def _keep(self, path: Path, message: str) -> None:
        job = self.job
        with writing(self.db) as conn:
            blob_id = blobs.store_dataset(conn, path, owner=job.owner)
            finished = queue.finish_job(
                conn,
                job.id,
                self.worker.worker_id,
                Status.DONE,
                message,
                result_blob_id=blob_id,
                attempt=job.attempts,
            )
            if not finished:
                raise LostJob()  # rolls the stored file back with it


def _format_of(path: str) -> str:
    """The input's format, as read_table sniffs it (the output is written the same way)."""
    file = Path(path)
    return sniff_format(file, file.read_bytes()[:65536])


def _minutes(seconds: float | None) -> str:
    seconds = float(seconds or 0)
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} seconds"
