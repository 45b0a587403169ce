"""The studio's named API endpoints: every action of the page, returning plain values.

Registered with gr.api inside the Blocks, so gradio_client sees them under /name; each one
raises gr.Error with a message a person can act on (see app.messages).
"""

from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from app import (
    access_share,
    adapter_actions,
    compare,
    insights_view,
    job_actions,
    predict_view,
    preview,
    publish_view,
    serving,
)
from app.auth import current_actor
from app.job_files import enqueue_with_uploads
from app.messages import scrub, shown_as_error, shown_spec
from app.uploads import uploaded_file
from ia3engine.errors import DataError

_config = {"data_dir": Path("ia3-data")}


def _shown_job(job: dict) -> dict:
    """A job as an API client sees it: files by name, no server path in spec or message."""
    shown = {**job, "spec": shown_spec(job.get("spec"))}
    if shown.get("message"):
        shown["message"] = scrub(shown["message"])
    return shown


def describe_model(model: str = "minilm", task: str = "classify") -> dict:
    """Architecture, parameter count and the modules IA3 will scale, before training."""
    return preview.describe_model(model, task)


def samples() -> dict:
    """Sample datasets shipped with the studio: name -> its file's name (pass the name as
    spec['data'] or as a data_file)."""
    return {name: Path(path).name for name, path in preview.sample_datasets().items()}


def describe_dataset(
    data_file: FileData, text_column: str = "", label_column: str = "", task: str = "classify"
) -> dict:
    """Format, rows, columns, guessed mapping, labels and class balance of a dataset file."""
    path = uploaded_file(data_file, preview.sample_datasets())  # yours, or a sample by name
    return preview.describe_dataset(path or "", text_column, label_column, task)


def enqueue(
    spec: dict, data_file: FileData | None = None, eval_file: FileData | None = None
) -> int:
    """Queue a training job. `spec` holds TrainSpec fields; `data` may name a sample
    ('sentiment'); an uploaded data_file/eval_file takes the place of data/eval_data."""
    fields, files = dict(spec or {}), {}
    if data_file is not None:
        files["data"] = uploaded_file(data_file, preview.sample_datasets())
    elif fields.get("data") in preview.sample_datasets():
        fields["data"] = preview.sample_datasets()[fields["data"]]
        fields.setdefault("eval_data", preview.sample_eval_file(fields["data"]))
    if eval_file is not None:
        files["eval_data"] = uploaded_file(eval_file)
    if not (files.get("data") or fields.get("data")):
        raise DataError("No dataset: upload data_file or set spec['data'] to a sample name.")
    return enqueue_with_uploads(fields, files, _config["data_dir"])


def job_status(job_id: int) -> dict:
    """One job: status, step, total_steps, eta_s, loss, message, adapter_id, ..."""
    return _shown_job(job_actions.job_status(job_id))


def list_jobs(status: str = "", limit: int = 50) -> list:
    """Jobs, newest first; status filters (queued, running, done, failed, cancelled)."""
    return [_shown_job(job) for job in job_actions.list_jobs(status, limit)]


def job_log(job_id: int, tail: int = 50) -> list:
    """The last lines of a job's log."""
    return [scrub(line) for line in job_actions.log_lines(job_actions.job_events(job_id), tail)]


def job_curves(job_id: int) -> dict:
    """Loss and eval-metric points of a job: {'loss': [...], 'metrics': [...]}."""
    return job_actions.curves(job_actions.job_events(job_id))


def job_insights(job_id: int) -> dict:
    """Validation insights of a finished training job, before and after tuning: per-class
    precision/recall/F1, confusion counts, the most confident wrong rows (classification), or
    prompts with reference and generated text (generation). Schema: docs/studio.md."""
    return insights_view.job_insights(job_id)


def compare_jobs(job_ids: list[int]) -> dict:
    """Two to eight of your training jobs side by side: curves ([{step, value, series}]),
    the settings that differ and the final metrics ({headers, rows} each), adapter links."""
    return compare.compare_jobs(job_ids, current_actor())


def cancel_job(job_id: int) -> dict:
    """Ask a job to stop; it keeps its last checkpoint."""
    return job_actions.cancel_job(job_id)


def retry_job(job_id: int) -> int:
    """Queue a failed or cancelled job again; returns the job id that will run."""
    return job_actions.retry_job(job_id)


def predict_file(
    data_file: FileData,
    adapter_id: int | None = None,
    base_model: str = "",
    text_column: str = "",
) -> int:
    """Queue a predict job: every row of the uploaded CSV/JSONL/Parquet file through one of
    your adapters (adapter_id; its own base model), or base_model alone (adapter_id empty);
    returns the job id. Follow it with job_status; download_prediction gives the file."""
    path = uploaded_file(data_file, preview.sample_datasets())  # yours, or a sample by name
    return predict_view.enqueue_prediction(
        path, adapter_id, base_model, text_column, _config["data_dir"]
    )


def download_prediction(job_id: int) -> FileData:
    """A finished predict job's file: the input rows with predicted_label and prob_<label>
    (or generated_text), in the input's format."""
    return FileData(path=predict_view.prediction_download(job_id))


def predict(text: str, adapter_ids: list[int], include_base: bool = True) -> dict:
    """The untuned base and each adapter on one input, side by side."""
    return serving.compare(text, adapter_ids, include_base)


def mix(text: str, adapter_ids: list[int], weights: list[float]) -> dict:
    """A weighted mix of adapters (same base model) on one input."""
    return serving.mix(text, adapter_ids, weights)


def list_adapters(search: str = "", base_model: str = "", task: str = "") -> list:
    """Registered adapters, newest first, filtered by text, base model and task."""
    return adapter_actions.list_adapters(search, base_model, task)


def adapter_info(adapter_id: int) -> dict:
    """One adapter: name, base model, task, labels, metrics, model card, files."""
    return adapter_actions.adapter_info(adapter_id)


def download_adapter(adapter_id: int) -> FileData:
    """The adapter as a zip that loads in peft (PeftModel.from_pretrained on the unzipped folder)."""
    return FileData(path=adapter_actions.adapter_zip(adapter_id))


def download_adapter_file(adapter_id: int, filename: str) -> FileData:
    """One file of the adapter, e.g. adapter_model.safetensors."""
    return FileData(path=adapter_actions.adapter_file(adapter_id, filename))


def import_adapter(adapter_zip: FileData, base_model: str = "", name: str = "") -> int:
    """Register an adapter zip (PEFT format, safetensors only); returns its id."""
    return adapter_actions.import_adapter(uploaded_file(adapter_zip), base_model, name)


def rename_adapter(adapter_id: int, name: str) -> dict:
    """Rename an adapter; returns it."""
    return adapter_actions.rename_adapter(adapter_id, name)


def delete_adapter(adapter_id: int) -> int:
    """Delete an adapter and its files; returns the id."""
    return adapter_actions.delete_adapter(adapter_id)


def export_merged(adapter_id: int) -> FileData:
    """The base model with the adapter merged into its weights, as a zip."""
    return FileData(path=adapter_actions.export_merged(adapter_id))


def publish_adapter(adapter_id: int, repo: str, token: str = "", private: bool = True) -> dict:
    """Push one of your adapters (weights, adapter_config.json, a model card with the Hub's
    metadata) to the Hub repository `repo` (owner/name), private unless private=False. `token`
    is a write token, used for this call only; on a Space with sign-in it may be empty.
    Returns {'repo', 'url', 'private'}."""
    return publish_view.publish_adapter(adapter_id, repo, token, private)


ENDPOINTS = [
    describe_model,
    samples,
    describe_dataset,
    enqueue,
    job_status,
    list_jobs,
    job_log,
    job_curves,
    job_insights,
    compare_jobs,
    cancel_job,
    retry_job,
    predict_file,
    download_prediction,
    predict,
    mix,
    list_adapters,
    adapter_info,
    download_adapter,
    download_adapter_file,
    import_adapter,
    rename_adapter,
    delete_adapter,
    export_merged,
    publish_adapter,
]
ENDPOINTS += access_share.ENDPOINTS  # share links: share_adapter, unshare_adapter, share_link
# Reads may run side by side; predictions share one model pool, so they queue one at a time.
_READS = {"job_status", "list_jobs", "job_log", "job_curves", "compare_jobs"}
_READS |= {"list_adapters", "adapter_info"}
_READS |= {"job_insights"}


def register(data_dir: Path) -> None:
    """Add every endpoint to the Blocks being built (call inside `with gr.Blocks()`)."""
    _config["data_dir"] = Path(data_dir)
    for fn in ENDPOINTS:
        limit = None if fn.__name__ in _READS else "default"
        gr.api(shown_as_error(fn), api_name=fn.__name__, concurrency_limit=limit)
