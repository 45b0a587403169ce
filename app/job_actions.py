"""Studio actions on training jobs: queue, follow, cancel, retry.

Thin calls into jobs.access as the signed-in person that return plain JSON-ready values for
the page and the API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from pathlib import Path

from app.auth import current_actor
from ia3engine.data.dataset import prepare_dataset
from ia3engine.training.spec import TrainSpec
from jobs import access

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 200


def _plain(value):
    """JSON-ready copy: datetimes become ISO strings, dataclasses dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):  # a job's Status: its plain text, as the API always sent
        return value.value
    return value


def build_spec(fields: dict):
    """A validated TrainSpec from form fields; empty values fall back to the spec's defaults."""
    given = {k: v for k, v in fields.items() if v is not None and v != ""}
    spec = TrainSpec.from_dict(given)
    spec.validate()
    return spec


def check_data(spec) -> None:
    """Read, map and split the spec's data now, so a bad file is refused before queueing."""
    if not Path(str(spec.data)).is_file():
        return  # a Hub dataset id: only the worker (online) can read it
    prepare_dataset(**spec.data_options())


def enqueue_training(fields: dict) -> int:
    """Validate the form's fields as a TrainSpec and its data, queue it as the signed-in
    user's job; returns the job id."""
    actor = current_actor()
    # The host's limits, and (for signed-in users) only uploaded files, samples, Hub models.
    given = {k: v for k, v in fields.items() if v is not None and v != ""}
    # Checked before validation, whose messages would tell whether a path exists here.
    spec = build_spec(access.admit(given, actor=actor))
    check_data(spec)
    # The files go into the database, so a worker on another machine can read them.
    job_id = access.enqueue(spec, actor=actor, upload_data=True)
    logger.info("queued job %s (%s on %s)", job_id, spec.model, spec.data)
    return int(job_id)


def job_status(job_id: int) -> dict:
    """One job's row, as plain values (status, step, total_steps, eta_s, loss, message, ...)."""
    return _plain(access.get_job(int(job_id), actor=current_actor()))


def list_jobs(status: str | None = None, limit: int = 100) -> list[dict]:
    """The signed-in user's jobs (everyone's for an admin), newest first, optionally by status."""
    found = access.list_jobs(current_actor(), status=status or None, limit=int(limit))
    return [_plain(job) for job in found]


def job_events(job_id: int, after_id: int = 0) -> list[dict]:
    """The job's events (step, eval, checkpoint, log, ...) after event id `after_id`."""
    events = access.job_events(int(job_id), actor=current_actor(), after_id=int(after_id))
    return [_plain(event) for event in events]


def cancel_job(job_id: int) -> dict:
    """Ask a job to stop; a running job stops within a step and keeps its checkpoint."""
    return _plain(access.cancel_job(int(job_id), actor=current_actor()))


def retry_job(job_id: int) -> int:
    """Queue a failed or cancelled job again; returns the id of the job that will run."""
    return int(access.retry_job(int(job_id), actor=current_actor()))


def curves(events: list[dict]) -> dict[str, list[dict]]:
    """Loss and eval-metric points from a job's events, for the plots."""
    loss, metrics = [], []
    for event in events:
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "step" and data.get("loss") is not None:
            loss.append({"step": data["step"], "value": data["loss"], "series": "train loss"})
        elif kind == "eval":
            for name, value in (data.get("metrics") or {}).items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    continue
                row = {"step": data.get("step", 0), "value": value, "series": f"eval {name}"}
                (loss if "loss" in name else metrics).append(row)
    return {"loss": loss, "metrics": metrics}


def log_lines(events: list[dict], tail: int = LOG_TAIL_LINES) -> list[str]:
    """Readable lines for the log view, last `tail` only."""
    lines = []
    for event in events:
        data = event.get("data") or {}
        time = str(event.get("time") or "")[11:19]
        kind = event.get("type")
        if kind == "log":
            text = data.get("message") or data.get("line") or ""
        elif kind == "step":
            continue  # steps are in the progress bar and plot; they would flood the log
        elif kind == "eval":
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in (data.get("metrics") or {}).items())
            # The untuned start is scored after training, but stands for step 0.
            when = "before tuning (step 0)" if data.get("before") else f"at step {data.get('step')}"
            text = f"eval {when}: {shown}"
        elif kind == "checkpoint":
            text = f"checkpoint saved at step {data.get('step')}"
        elif kind == "failed":
            text = f"failed: {data.get('message', '')}"
        elif kind == "started" and data.get("kind") == "predict":
            text = f"started: predicting {data.get('total_steps', '?')} rows on {data.get('device', '?')}"
        elif kind == "started":
            text = (
                f"started: {data.get('total_steps', '?')} steps on {data.get('device', '?')}, "
                f"{data.get('train_rows', '?')} training and {data.get('eval_rows', '?')} eval "
                f"rows, {data.get('trainable_params', 0):,} trainable parameters"
                + (f", resumed at step {data.get('step')}" if data.get("resumed") else "")
            )
        elif kind == "finished":
            metrics = data.get("metrics") or {}
            text = "finished: " + (", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()) or "ok")
        else:
            text = f"{kind} {_fmt_fields(data)}".strip()
        lines.append(f"{time} {text}".strip())
    return lines[-tail:]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _fmt_fields(data: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in data.items() if not isinstance(v, dict | list))
