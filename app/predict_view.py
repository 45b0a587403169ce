"""Predict a whole file: the Predict tab's block (an adapter or the base alone, an uploaded
file -> a queued predict job) and the Jobs tab's download of a finished prediction.

The actions call jobs.access as the signed-in person; the file is this person's upload (within
their storage quota), the adapter one of theirs, the download their own job's output only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from app import adapter_actions, auth, job_actions, uploads
from app.access_files import servable
from app.job_files import staged_uploads
from app.messages import explain, field_note, note_box
from app.studio_config import StudioConfig
from ia3engine.errors import DataError
from jobs import access, quota
from jobs.db import data_dir as data_dir_of_jobs
from jobs.status import Status

logger = logging.getLogger(__name__)

BASE = "base"  # the dropdown's value for "base model only"
BASE_LABEL = "base model only"
FILE_TYPES = [".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"]


# Actions (the page and the API) -------------------------------------------------------------


def enqueue_prediction(
    path: str | None,
    adapter_id: int | str | None,
    base_model: str = "",
    text_column: str = "",
    data_dir: Path | None = None,
) -> int:
    """Queue a predict job of `path` (this person's upload or a sample) with one of their
    adapters, or with `base_model` alone when adapter_id is empty; returns the job id."""
    if not path:
        raise DataError("No file to predict: upload a CSV, JSONL or Parquet file.")
    actor = auth.current_actor()
    adapter = int(adapter_id) if adapter_id not in (None, "", BASE, 0, "0") else None
    model = (base_model or "").strip() or None
    if adapter is None and not model:
        raise DataError("Pick one of your adapters, or name the base model to use alone.")
    if actor.signed_in:
        quota.check(actor.name, uploads.file_size(path))  # the file is kept with the job
    folder = Path(data_dir) if data_dir else data_dir_of_jobs()
    with staged_uploads({"data": path}, folder) as staged:
        job_id = access.enqueue_predict(
            staged["data"],
            actor=actor,
            adapter_id=adapter,
            model=model,
            text_column=(text_column or "").strip() or None,
        )
    logger.info("queued predict job %s (%s)", job_id, f"adapter {adapter}" if adapter else model)
    return int(job_id)


def prediction_download(job_id: int) -> str:
    """The output file of a finished predict job of this person (their own copy to serve)."""
    return servable(access.prediction_file(int(job_id), actor=auth.current_actor()))


def adapter_choices() -> list[tuple[str, str]]:
    """This person's adapters, newest first, then the base alone."""
    found = adapter_actions.list_adapters()
    choices = [
        (f"#{a['id']} {a['name']} · {a['task']} · {a['base_model']}", str(a["id"])) for a in found
    ]
    return choices + [(BASE_LABEL, BASE)]


# The Predict tab's block -------------------------------------------------------------------


def _refresh_choices(current):
    try:
        choices = adapter_choices()
    except Exception as error:  # signed out, database briefly away: the note says so
        logger.info("adapter choices not read: %s", error)
        return gr.skip()
    values = [value for _, value in choices]
    return gr.Dropdown(choices=choices, value=current if current in values else values[0])


def _base_visible(choice):
    return gr.Textbox(visible=choice == BASE)


def _queue(choice, base_model, path, text_column, config: StudioConfig):
    """Note and the queued job's id (None when refused)."""
    try:
        path = uploads.uploaded_file(path)  # only this person's upload
        job_id = enqueue_prediction(
            path,
            None if choice == BASE else choice,
            base_model if choice == BASE else "",
            text_column,
            config.data_dir,
        )
    except Exception as error:
        return field_note(explain(error)), None
    note = f"Job #{job_id} queued: follow it in the Jobs tab; its file is ready there when done."
    return field_note(note, "ok"), job_id


def build(demo: gr.Blocks, config: StudioConfig) -> SimpleNamespace:
    """The "Predict a file" block; returns queue_event (chain after it) and queued_job."""
    gr.Markdown(
        "### Predict a file\nRun one of your adapters (or the base model alone) over every row "
        "of a CSV, JSONL or Parquet file. The result has your rows unchanged plus the predicted "
        "label and its probabilities (or the generated text), in the same format; it is "
        "downloaded from the **Jobs** tab when the job is done."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            adapter = gr.Dropdown(
                label="Adapter",
                choices=[(BASE_LABEL, BASE)],
                value=BASE,
                elem_id="predict-adapter",
            )
            base = gr.Textbox(
                label="Base model (used alone: it generates text)",
                value=config.model,
                visible=True,
                elem_id="predict-base",
            )
            column = gr.Textbox(
                label="Text column (optional: the adapter's own, else guessed)",
                elem_id="predict-text-column",
            )
        with gr.Column(scale=2):
            upload = gr.File(
                label="File to predict",
                file_types=FILE_TYPES,
                type="filepath",
                elem_id="predict-file",
            )
            button = gr.Button("Predict the file", variant="primary", elem_id="predict-button")
            note = note_box("predict-note")
    queued_job = gr.Number(visible=False, precision=0)
    private = {"api_visibility": "private"}
    demo.load(_refresh_choices, adapter, adapter, **private).then(
        _base_visible, adapter, base, **private
    )
    adapter.change(_base_visible, adapter, base, **private)

    def queue(choice, base_model, path, text_column):
        return _queue(choice, base_model, path, text_column, config)

    event = button.click(queue, [adapter, base, upload, column], [note, queued_job], **private)
    return SimpleNamespace(
        queue_event=event, queued_job=queued_job, adapter=adapter, refresh=_refresh_choices
    )


# The Jobs tab's download -------------------------------------------------------------------


def download_button() -> gr.DownloadButton:
    """The Jobs tab's "Download predictions" button (hidden until a prediction is done)."""
    return gr.DownloadButton(
        "Download predictions", visible=False, variant="primary", elem_id="prediction-download"
    )


def download_update(job_id, drawn):
    """The download button for the selected job: its file once a predict job is done."""
    hidden = gr.DownloadButton(value=None, visible=False)
    if job_id is None:
        return (hidden, None) if drawn else (gr.skip(), drawn)
    try:
        job = job_actions.job_status(int(job_id))
    except Exception:  # gone, or not theirs: nothing to download
        return hidden, None
    ready = job.get("kind") == "predict" and job["status"] == Status.DONE
    key = f"{job['id']}:{job.get('result_blob_id')}" if ready else None
    if key == drawn:
        return gr.skip(), drawn
    if not ready:
        return hidden, None
    try:
        path = prediction_download(int(job_id))
    except Exception as error:
        logger.info("prediction of job %s not served: %s", job_id, error)
        return hidden, None
    return gr.DownloadButton(value=path, visible=True), key


def follow_download(button: gr.DownloadButton, selected: gr.Dropdown, timer: gr.Timer, demo):
    """Keep `button` on the selected job's prediction file (the Jobs tab calls this)."""
    drawn = gr.State(None)
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    for trigger in (timer.tick, demo.load, selected.change):
        trigger(download_update, [selected, drawn], [button, drawn], **quiet)
