"""Predict jobs: a whole file through an adapter (or the base alone) on the queue, like training.

A predict job's row has kind "predict", its input file as a stored dataset (data_blob_id) and,
once done, its output file as another (result_blob_id), owned and counted like uploads.
Everything is checked here before the job is queued: the file, its text column, the bounds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, select

from ia3engine.data.read import read_table
from ia3engine.errors import AdapterError, DataError
from ia3engine.serve.predict_file import (
    DEFAULT_BATCH,
    DEFAULT_NEW_TOKENS,
    check_bounds,
    choose_text_column,
    output_format,
)
from ia3engine.training.run import TRAINING_INFO
from jobs import blobs, queue, registry
from jobs.db import reading
from jobs.errors import JobError
from jobs.models import DatasetBlob

log = logging.getLogger(__name__)

KIND = "predict"
BASE_ALONE = "base model only"  # what a spec shows for a job without an adapter


def predict_spec(
    model: str,
    data: str | Path,
    *,
    adapter: registry.AdapterInfo | None = None,
    adapter_folder: Path | None = None,
    text_column: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    max_rows: int | None = None,
    db=None,
) -> dict:
    """The stored spec of a predict job, after reading the file once: it exists, is a table
    under the row cap, and has the text column (given, the adapter's, or guessed).

    `model`, `data` and `name` read like a training spec's, so the Jobs tab and `ia3 jobs`
    list a predict job beside training jobs."""
    check_bounds(batch_size, max_new_tokens)
    info = {}
    if adapter is not None:
        if adapter.base_model and model and model != adapter.base_model:
            raise AdapterError(
                f"Adapter #{adapter.id} was trained on '{adapter.base_model}', not '{model}'. "
                "Predict with its own base model (leave the model empty)."
            )
        model = adapter.base_model
        info = _training_info(adapter, adapter_folder, db)
    if not model:
        raise AdapterError("No base model: pick an adapter, or name the base model to use alone.")
    source = Path(str(data))
    if not source.is_file():
        raise DataError(f"The file '{source.name}' was not found. Upload it again.")
    table = read_table(source, max_rows=max_rows)
    output_format(table.format)  # refuses what cannot be written back (a Hub id)
    column = choose_text_column(table.frame, text_column or None, info, source.name)
    task = (adapter.task if adapter is not None else None) or "generate"
    return {
        "kind": KIND,
        "model": model,
        "data": str(source),
        "adapter_id": adapter.id if adapter is not None else None,
        "adapter_name": adapter.name if adapter is not None else BASE_ALONE,
        "name": f"predict {source.name}",
        "task": task,
        "text_column": column,
        "rows": len(table.frame),
        "batch_size": int(batch_size),
        "max_new_tokens": int(max_new_tokens),
        "max_rows": max_rows,
    }


def _training_info(adapter: registry.AdapterInfo, folder: Path | None, db) -> dict:
    """The adapter's training_info.json (its labels, prompt and text column)."""
    path = Path(folder or registry.adapter_folder(adapter.id, db=db)) / TRAINING_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        raise AdapterError(
            f"Adapter #{adapter.id} has no readable {TRAINING_INFO} (it was imported from "
            "elsewhere), so its labels and prompt are unknown; predict with an adapter trained "
            "here."
        )
    return info


def enqueue_predict(
    spec: dict,
    *,
    owner: str | None = None,
    max_seconds: float | None = None,
    room: Callable[[Connection], None] | None = None,
    db=None,
) -> int:
    """Queue a predict job (spec from predict_spec); its input file goes into the database
    as the owner's dataset, so any worker can read it. Returns the job id."""
    if spec.get("kind") != KIND:
        raise JobError("enqueue_predict takes a spec made by predict_spec.")
    job_id = queue.insert_job(
        spec,
        kind=KIND,
        owner=owner,
        data_files={"data": spec["data"]},
        max_seconds=max_seconds,
        room=room,
        db=db,
    )
    log.info("predict job %s queued (%s rows of %s)", job_id, spec["rows"], Path(spec["data"]).name)
    return job_id


def result_file(job: queue.JobInfo, *, db=None) -> Path:
    """A finished predict job's output file, written from the database under the data dir."""
    if job.kind != KIND:
        raise JobError(f"Job #{job.id} trains an adapter; only predict jobs have a result file.")
    if job.result_blob_id is None:
        raise JobError(
            f"Job #{job.id} is {job.status}; its file is ready once it is done."
            if job.status != "done"
            else f"Job #{job.id} kept no result file; predict the file again."
        )
    return blobs.materialise_dataset(job.result_blob_id, db=db)


def result_size(job: queue.JobInfo, *, db=None) -> int | None:
    """Bytes of the job's output file, None when it has none."""
    if job.result_blob_id is None:
        return None
    with reading(db) as conn:
        return conn.scalar(
            select(DatasetBlob.size_bytes).where(DatasetBlob.id == job.result_blob_id)
        )
