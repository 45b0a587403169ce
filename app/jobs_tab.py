"""The Jobs tab: queue and history, and for one job its progress, curves, log, cancel and retry.

Everything is read from the database on a timer, so a reload or a second browser sees the
same state; the per-browser state only remembers what was last drawn, to skip redraws.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import PurePath
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import compare_view, insights_view, job_actions, predict_view
from app.messages import explain, field_note, note_box
from app.studio_config import StudioConfig
from jobs.status import ACTIVE, Status, sources

logger = logging.getLogger(__name__)

TABLE_HEADERS = ["job", "status", "model", "data", "progress", "loss", "created", "adapter"]
CURVE_COLUMNS = ["step", "value", "series"]


@dataclass
class JobsTab:
    selected: gr.Dropdown  # the job shown in detail (value: job id)
    try_button: gr.Button  # "Try in the playground", for a finished job
    adapter_id: gr.Number  # the finished job's adapter (hidden)


def _eta(seconds) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(int(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _describe_job(job: dict) -> tuple[str, str]:
    spec = job.get("spec") or {}
    data = PurePath(str(spec.get("data") or "")).name
    return str(spec.get("model") or "?"), data


def _progress_text(job: dict) -> str:
    step, total = job.get("step") or 0, job.get("total_steps") or 0
    return f"{step}/{total}" if total else "—"


def jobs_table(jobs: list[dict]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        model, data = _describe_job(job)
        loss = job.get("loss")
        rows.append(
            [
                job["id"],
                job["status"],
                model,
                data,
                _progress_text(job),
                f"{loss:.4f}" if isinstance(loss, float) else "—",
                str(job.get("created_at") or "")[:19].replace("T", " "),
                _adapter_cell(job),
            ]
        )
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def _adapter_cell(job: dict) -> str:
    """A training job's adapter (the one it made); a predict job's (the one it used) or base."""
    if job.get("kind") == "predict":
        spec = job.get("spec") or {}
        used = spec.get("adapter_id")
        return f"#{used} {spec.get('adapter_name') or ''}".strip() if used else "base"
    return f"#{job['adapter_id']}" if job.get("adapter_id") else ""


def job_choices(jobs: list[dict]) -> list[tuple[str, int]]:
    choices = []
    for job in jobs:
        model, data = _describe_job(job)
        choices.append((f"#{job['id']} · {job['status']} · {model} on {data}", job["id"]))
    return choices


def default_job(jobs: list[dict]) -> int | None:
    """The job a fresh page shows: the newest running one, else the newest queued, else newest."""
    for status in (Status.RUNNING, Status.QUEUED):
        for job in jobs:
            if job["status"] == status:
                return job["id"]
    return jobs[0]["id"] if jobs else None


def progress_html(job: dict) -> str:
    step, total = job.get("step") or 0, job.get("total_steps") or 0
    status = job["status"]
    share = 100.0 if status == Status.DONE else (100.0 * step / total if total else 0.0)
    model, data = _describe_job(job)
    unit = "Row" if job.get("kind") == "predict" else "Step"  # a predict job counts rows
    waiting = "Waiting for a worker"
    if status == Status.RUNNING:
        waiting = "Starting: loading the model and data"
    facts = [f"{unit} {step} of {total} ({share:.0f} %)" if total else waiting]
    if status == Status.RUNNING:
        facts.append(f"ETA {_eta(job.get('eta_s'))}")
    if isinstance(job.get("loss"), float):
        facts.append(f"loss {job['loss']:.4f}")
    message = job.get("message") or ""
    if status == Status.DONE and job.get("adapter_id"):
        message = message or f"Adapter #{job['adapter_id']} is ready."
    return (
        f'<div class="job-progress" data-status="{status}">'
        f'<div class="job-head"><span class="badge badge-{status}">{status}</span> '
        f"Job #{job['id']} · {html.escape(model)} on {html.escape(data)}</div>"
        f'<div class="bar"><div class="fill fill-{status}" style="width:{share:.1f}%"></div></div>'
        f'<div class="job-facts">{" · ".join(facts)}</div>'
        + (f'<div class="job-message">{html.escape(message)}</div>' if message else "")
        + "</div>"
    )


MAIN_METRICS = ("eval accuracy", "eval exact_match", "eval f1")
LOSS_COLORS = {"train loss": "#2563eb", "eval loss": "#f97316"}


def _metric_plot(points: list[dict], visible: bool = True):
    """The validation metric that matters most (accuracy, else exact match, ...), alone."""
    series = list(dict.fromkeys(p["series"] for p in points))
    main = next((m for m in MAIN_METRICS if m in series), series[0] if series else None)
    if main is None:
        return gr.LinePlot(value=None, label="Validation metric", visible=visible)
    chosen = [p for p in points if p["series"] == main]
    label = "Validation " + main.removeprefix("eval ").replace("_", " ")
    return gr.LinePlot(
        value=_curve_frame(chosen), label=label, y_title=label.split()[-1], visible=visible
    )


def _every_loss_series(points: list[dict]) -> list[dict]:
    """The plot fixes its colours when it first draws: a series that appears later (validation
    loss) would stay uncoloured, unseen. So both are named from the first point on; one still
    without points gets a copy of the first point, and a one-point line draws nothing."""
    named = {p["series"] for p in points}
    missing = [name for name in LOSS_COLORS if points and name not in named]
    return points + [{**points[0], "series": name} for name in missing]


def _curve_frame(points: list[dict]) -> pd.DataFrame | None:
    """Plot data, or None while there are no points (an empty frame breaks the plot's colours)."""
    if not points:
        return None
    frame = pd.DataFrame(points, columns=CURVE_COLUMNS)
    # Numeric even when empty, or the plot's scales complain.
    return frame.astype({"step": "float64", "value": "float64", "series": "object"})


def _detail(job_id, config: StudioConfig):
    """Progress html, loss frame, metric frame, log text, button states for one job."""
    if job_id is None:
        idle = '<div class="job-progress">No jobs yet. Queue one in the Train tab.</div>'
        return idle, None, None, "", False, False, None
    job = job_actions.job_status(int(job_id))
    events = job_actions.job_events(int(job_id))
    curves = job_actions.curves(events)
    log = "\n".join(job_actions.log_lines(events))
    active = job["status"] in ACTIVE
    retry = job["status"] in sources("retry")
    plots = job.get("kind") != "predict"  # a predict job counts rows: no curves to draw
    return (
        progress_html(job),
        gr.LinePlot(value=_curve_frame(_every_loss_series(curves["loss"])), visible=plots),
        _metric_plot(curves["metrics"], visible=plots),
        log,
        active,
        retry,
        job.get("adapter_id") if job["status"] == Status.DONE else None,
    )


def _refresh(selected, drawn, config: StudioConfig):
    """One timer tick: redraw only the parts whose data changed since the last tick.

    Outputs: table, selected, note, progress, loss, metrics, log, cancel, retry, try, adapter,
    drawn.
    """
    drawn = dict(drawn or {})
    unchanged = (gr.skip(),) * 8
    try:
        jobs = job_actions.list_jobs(limit=100)
    except Exception as error:
        return (gr.skip(), gr.skip(), field_note(explain(error))) + unchanged + (drawn,)
    # The page's choice is never sent back: a tick sent before a click (or before the jump to a
    # just-queued job) lands after it, and would put the old job back. Only a missing one is.
    page_choice = selected
    if selected not in [j["id"] for j in jobs]:
        selected = default_job(jobs)
    out_table, out_choice = gr.skip(), gr.skip()
    table_key = json.dumps([[j["id"], j["status"], j.get("step"), j.get("loss")] for j in jobs])
    if table_key != drawn.get("table") or selected != drawn.get("selected"):
        out_table = jobs_table(jobs)
        chosen = {} if selected == page_choice else {"value": selected}
        out_choice = gr.Dropdown(choices=job_choices(jobs), **chosen)
        drawn["table"] = table_key
    job = next((j for j in jobs if j["id"] == selected), None)
    detail_key = json.dumps([selected, job], default=str)
    if detail_key == drawn.get("detail"):
        return (out_table, out_choice, gr.skip()) + unchanged + (drawn,)
    drawn["detail"], drawn["selected"] = detail_key, selected
    html_text, loss, metrics, log, active, retry, adapter = _detail(selected, config)
    buttons = (
        gr.Button(interactive=active),
        gr.Button(interactive=retry),
        gr.Button(visible=adapter is not None),
    )
    return (
        (out_table, out_choice, gr.skip(), html_text, loss, metrics, log)
        + buttons
        + (
            adapter,
            drawn,
        )
    )


def _layout() -> SimpleNamespace:
    """The components, top to bottom: table, job card and buttons, curves, log."""
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        label="Queue and history (newest first; click a row to follow it)",
        interactive=False,
        max_height=260,
        elem_id="jobs-table",
    )
    note = note_box("jobs-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            # Custom values allowed: a refresh read before a job was queued may land after the
            # jump to it, and Gradio would then refuse the job as not among the choices.
            selected = gr.Dropdown(
                label="Job", choices=[], allow_custom_value=True, elem_id="job-select"
            )
            progress = gr.HTML(elem_id="job-progress")
        with gr.Column(scale=1, min_width=220):
            cancel = gr.Button(
                "Cancel job", variant="stop", interactive=False, elem_id="cancel-job"
            )
            retry = gr.Button("Retry job", interactive=False, elem_id="retry-job")
            try_button = gr.Button(
                "Try it in the Playground", variant="primary", visible=False, elem_id="try-adapter"
            )
            prediction = predict_view.download_button()  # a finished predict job's file
    with gr.Row():
        # No initial frame: a plot that starts from an empty frame never draws its coloured lines.
        # Colours are fixed and named in the label: the plot's own legend is cut off.
        loss = gr.LinePlot(
            None,
            x="step",
            y="value",
            color="series",
            color_map=LOSS_COLORS,
            colors_in_legend=[],
            label="Loss: training (blue) and validation (orange)",
            height=300,
            x_title="step",
            y_title="loss",
            elem_id="loss-plot",
            elem_classes=["fit-plot"],
        )
        metrics = gr.LinePlot(
            None,
            x="step",
            y="value",
            label="Validation metric",
            height=300,
            x_title="step",
            y_title="metric",
            y_axis_format=".3~f",  # 0.75, not Vega's 0.750000 for a flat line
            elem_id="metric-plot",
            elem_classes=["fit-plot"],
        )
    log = gr.Textbox(
        label="Log (last lines)",
        lines=10,
        max_lines=10,
        interactive=False,
        autoscroll=True,
        elem_id="job-log",
    )
    return SimpleNamespace(
        table=table,
        note=note,
        selected=selected,
        progress=progress,
        cancel=cancel,
        retry=retry,
        try_button=try_button,
        prediction=prediction,
        loss=loss,
        metrics=metrics,
        log=log,
        adapter_id=gr.Number(visible=False, precision=0),
        drawn=gr.State({}),
    )


def build(demo: gr.Blocks, config: StudioConfig) -> JobsTab:
    """Lay out the tab and wire its refresh, selection, cancel and retry."""
    c = _layout()
    compare_view.build(c.table)  # "Compare runs": its choices follow the table
    outputs = [
        c.table,
        c.selected,
        c.note,
        c.progress,
        c.loss,
        c.metrics,
        c.log,
        c.cancel,
        c.retry,
        c.try_button,
        c.adapter_id,
        c.drawn,
    ]
    quiet = {"api_visibility": "private", "show_progress": "hidden"}

    def refresh(choice, state):
        return _refresh(choice, state, config)

    timer = gr.Timer(config.refresh_s)
    for trigger in (timer.tick, demo.load, c.selected.input):
        trigger(refresh, [c.selected, c.drawn], outputs, **quiet)
    c.table.select(_pick_row, c.table, c.selected, api_visibility="private").then(
        refresh, [c.selected, c.drawn], outputs, **quiet
    )
    cancel = _act(job_actions.cancel_job, "Cancel requested for job #{}.")
    c.cancel.click(cancel, c.selected, c.note, api_visibility="private")
    retry = _act(job_actions.retry_job, "Job #{} queued again.")
    c.retry.click(retry, c.selected, c.note, api_visibility="private")
    predict_view.follow_download(c.prediction, c.selected, timer, demo)
    insights_view.follow_job(c.selected, timer, demo)  # a finished training job's insights
    return JobsTab(c.selected, c.try_button, c.adapter_id)


def _pick_row(table: pd.DataFrame, event: gr.SelectData):
    row = event.index[0] if isinstance(event.index, list | tuple) else event.index
    return int(table.iloc[row]["job"])


def _act(action, done: str):
    def handler(job_id):
        if job_id is None:
            return field_note("Select a job first.", "info")
        try:
            result = action(int(job_id))
        except Exception as error:
            return field_note(explain(error))
        return field_note(done.format(result if isinstance(result, int) else job_id), "ok")

    return handler
