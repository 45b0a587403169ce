"""The Jobs tab's "Compare runs": pick two or more of your training jobs, see their curves on
one plot, the settings that differ, the final metrics and a link to each adapter.

Every press asks app.compare as the signed-in person (jobs.access checks each job).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import compare, job_actions
from app.auth import current_actor
from app.messages import explain, field_note, file_name, note_box
from jobs.compare import MAX_RUNS, MIN_RUNS

CURVE_COLUMNS = ["step", "value", "series"]


def job_choices(jobs: list[dict]) -> list[tuple[str, int]]:
    """The training jobs among `jobs` as dropdown choices (predict jobs have no curves)."""
    choices = []
    for job in jobs:
        if job.get("kind", "train") != "train":
            continue
        spec = job.get("spec") or {}
        name = spec.get("name") or file_name(spec.get("data")) or "?"
        choices.append((f"#{job['id']} · {job['status']} · {name}", int(job["id"])))
    return choices


def refresh_choices(drawn=None):
    """(dropdown, drawn): the choices from the person's jobs when they differ from those
    drawn last (the table changes at every step of a running job; the choices rarely do)."""
    try:
        jobs = job_actions.list_jobs(limit=100)
    except Exception:  # the tab's own refresh shows why; the choices stay as they were
        return gr.skip(), drawn
    choices = job_choices(jobs)
    if choices == drawn:
        return gr.skip(), drawn
    return gr.Dropdown(choices=choices), choices


def _frame(table: dict) -> pd.DataFrame:
    return pd.DataFrame(table["rows"], columns=table["headers"])


def _curve_frame(points: list[dict]) -> pd.DataFrame | None:
    if not points:
        return None  # an empty frame breaks the plot's colours
    frame = pd.DataFrame(points, columns=CURVE_COLUMNS)
    return frame.astype({"step": "float64", "value": "float64", "series": "object"})


def show(job_ids):
    """Outputs: note, plot, settings table, metrics table, links markdown."""
    try:
        found = compare.compare_jobs(job_ids or [], current_actor())
    except Exception as error:
        empty = pd.DataFrame()
        return field_note(explain(error)), None, empty, empty, ""
    settings = _frame(found["settings"])
    note = "" if not settings.empty else field_note("These runs share every setting.", "info")
    return (
        note,
        _curve_frame(found["curves"]),
        settings,
        _frame(found["metrics"]),
        compare.links_markdown(found["links"]),
    )


def _layout() -> SimpleNamespace:
    with gr.Accordion("Compare runs", open=False, elem_id="compare-runs"):
        with gr.Row(equal_height=True):
            jobs = gr.Dropdown(
                label=f"Training jobs to compare ({MIN_RUNS} to {MAX_RUNS})",
                choices=[],
                multiselect=True,
                max_choices=MAX_RUNS,
                scale=4,
                elem_id="compare-jobs",
            )
            button = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-button")
        note = note_box("compare-note")
        plot = gr.LinePlot(
            None,
            x="step",
            y="value",
            color="series",
            label="Loss and metrics of each run (one colour per run and curve)",
            height=400,  # the legend below the plot names every curve (see style.css)
            x_title="step",
            y_title="value",
            color_title="run and curve",
            elem_id="compare-plot",
            elem_classes=["fit-plot"],
        )
        settings = gr.Dataframe(
            label="Settings that differ", interactive=False, elem_id="compare-settings"
        )
        metrics = gr.Dataframe(
            label="Final metrics (and before tuning, where measured)",
            interactive=False,
            elem_id="compare-metrics",
        )
        links = gr.Markdown(elem_id="compare-links")
    return SimpleNamespace(
        jobs=jobs,
        button=button,
        note=note,
        plot=plot,
        settings=settings,
        metrics=metrics,
        links=links,
    )


def build(job_list: gr.Dataframe) -> SimpleNamespace:
    """Lay out the accordion; its choices follow `job_list` (the tab's table of jobs)."""
    c = _layout()
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    drawn = gr.State(None)
    job_list.change(refresh_choices, drawn, [c.jobs, drawn], **quiet)
    c.button.click(
        show,
        c.jobs,
        [c.note, c.plot, c.settings, c.metrics, c.links],
        api_visibility="private",
    )
    return c
