"""Compare runs: two to eight of a person's training jobs as one set of curves, the settings
that differ, the final metrics (beside the untuned start's) and a link to each adapter.

Plain values only, so the Jobs tab's "Compare runs" and the compare_jobs API show the same.
"""

from __future__ import annotations

import html
import json
import re

from app.job_actions import curves
from app.messages import PATH_FIELDS, file_name
from ia3engine.errors import IA3Error
from jobs.access import Actor
from jobs.compare import Run, compared_runs, numbers
from jobs.specs import spec_from_dict

MAX_POINTS = 400  # per series: a long run's curve is thinned, its first and last points kept
HIDDEN_SETTINGS = ("out_dir",)  # where the worker wrote the adapter: a server path, never shown
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|<>~-])")


def compare_jobs(job_ids, actor: Actor, db=None) -> dict:
    """The comparison of `job_ids` (2..8 of `actor`'s training jobs; repeats count once):

    - curves: [{step, value, series}] with series such as "#3 train loss", "#3 eval accuracy";
    - settings: {headers: ["setting", "#3", "#5"], rows}: only the settings that differ, as
      the runs used them (a preset's values filled in), data files by name;
    - metrics: {headers: ["job", "status", "steps", "adapter", "accuracy",
      "accuracy before tuning", ...], rows}: the final metrics of each run;
    - links: [{job, adapter_id, name, url}] to each adapter's page (url None without one).

    Another person's job is refused exactly like a missing one (jobs.access)."""
    runs = compared_runs(job_ids, actor=actor, db=db)
    return {
        "jobs": [run.job.id for run in runs],
        "curves": [point for run in runs for point in _run_curves(run)],
        "settings": settings_table(runs),
        "metrics": metrics_table(runs),
        "links": [_link(run) for run in runs],
    }


def _run_curves(run: Run) -> list[dict]:
    found = curves([{"type": e.type, "data": e.data} for e in run.events])
    points = [
        {**point, "series": f"#{run.job.id} {point['series']}"}
        for point in found["loss"] + found["metrics"]
    ]
    by_series: dict[str, list[dict]] = {}
    for point in points:
        by_series.setdefault(point["series"], []).append(point)
    return [point for series in by_series.values() for point in _thinned(series)]


def _thinned(points: list[dict]) -> list[dict]:
    if len(points) <= MAX_POINTS:
        return points
    stride = -(-len(points) // (MAX_POINTS - 1))  # ceiling division
    return points[:-1:stride] + points[-1:]


# Settings ------------------------------------------------------------------------------


def run_settings(spec: dict) -> dict[str, str]:
    """A job's settings as it trained: the preset's values filled in, files by name, the
    server's folders left out; every value as short text."""
    try:
        values = spec_from_dict(spec).resolved().to_dict()
    except IA3Error:  # a spec an older studio stored: show what it holds
        values = dict(spec) if isinstance(spec, dict) else {}
    shown = {}
    for key, value in values.items():
        if key in HIDDEN_SETTINGS:
            continue
        if key in PATH_FIELDS or key == "model":
            value = file_name(value)
        shown[key] = _text(value)
    return shown


def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_table(runs: list[Run]) -> dict:
    """Rows of the settings whose values are not the same in every run."""
    per_run = [run_settings(run.job.spec) for run in runs]
    names = list(dict.fromkeys(name for settings in per_run for name in settings))
    rows = []
    for name in names:
        values = [settings.get(name, "—") for settings in per_run]
        if len(set(values)) > 1:
            rows.append([name, *values])
    return {"headers": ["setting", *[f"#{run.job.id}" for run in runs]], "rows": rows}


# Metrics -------------------------------------------------------------------------------


def final_metrics(run: Run) -> dict[str, float]:
    """The adapter's metrics; without an adapter, those of the last 'finished' event, else of
    the last evaluation (a running, failed or cancelled job)."""
    if run.adapter is not None and run.adapter.metrics:
        return numbers(run.adapter.metrics)
    for kind in ("finished", "eval"):
        for event in reversed(run.events):
            if event.type == kind and isinstance(event.data.get("metrics"), dict):
                return numbers(event.data["metrics"])
    return {}


def metrics_table(runs: list[Run]) -> dict:
    """One row per run: job, status, steps, adapter, then each metric and (where the untuned
    start was measured) its value before tuning."""
    finals = [final_metrics(run) for run in runs]
    names = list(dict.fromkeys(name for metrics in finals for name in metrics))
    before_names = {name for run in runs for name in run.before}
    headers = ["job", "status", "steps", "adapter"]
    for name in names:
        headers += [name] + ([f"{name} before tuning"] if name in before_names else [])
    rows = []
    for run, metrics in zip(runs, finals, strict=True):
        job = run.job
        row = [f"#{job.id}", str(job.status.value), _steps(job), _adapter_text(run)]
        for name in names:
            row.append(_rounded(metrics.get(name)))
            if name in before_names:
                row.append(_rounded(run.before.get(name)))
        rows.append(row)
    return {"headers": headers, "rows": rows}


def _steps(job) -> str:
    return f"{job.step or 0}/{job.total_steps}" if job.total_steps else "—"


def _rounded(value) -> float | None:
    return None if value is None else round(value, 4)


def _adapter_text(run: Run) -> str:
    return f"#{run.adapter.id}" if run.adapter is not None else "—"


# Links ---------------------------------------------------------------------------------


def _link(run: Run) -> dict:
    adapter = run.adapter
    return {
        "job": run.job.id,
        "adapter_id": adapter.id if adapter else None,
        "name": adapter.name if adapter else None,
        "url": f"/adapters/{adapter.id}" if adapter else None,
    }


def links_markdown(links: list[dict]) -> str:
    """One line per job: a link to its adapter's page, or why there is none yet."""
    lines = []
    for link in links:
        if link["url"]:
            name = _MARKDOWN.sub(r"\\\1", html.escape(str(link["name"])))
            lines.append(
                f"- Job #{link['job']}: [adapter #{link['adapter_id']} · {name}]({link['url']})"
            )
        else:
            lines.append(f"- Job #{link['job']}: no adapter (not finished yet, or deleted)")
    return "\n".join(lines)
