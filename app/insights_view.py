"""Validation insights on the page: the Jobs tab's block for a finished training job and the
Adapters tab's block for the adapter's training job.

Drawn from the database only (jobs.insights, written by the worker): no model is loaded. The
reads go through jobs.access as the signed-in person, so a job or adapter of someone else is
refused like a missing one. Confusion matrices are PNGs (app/insights_chart.py), before and
after tuning; the tables are per class (with the untuned scores), the most confident wrong
rows (sortable by confidence), and, for generation, prompts with reference and generations.
"""

from __future__ import annotations

import html
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from app import access_mode
from app.access_files import servable
from app.auth import current_actor
from app.insights_chart import confusion_image
from ia3engine.errors import DataError
from jobs import access

logger = logging.getLogger(__name__)

PER_CLASS_HEADERS = [
    "class",
    "precision",
    "recall",
    "f1",
    "support",
    "precision before",
    "recall before",
    "f1 before",
]
WRONG_HEADERS = ["text", "true", "predicted", "confidence", "probabilities"]
WRONG_TYPES = ["str", "str", "str", "number", "str"]
# Room for "confidence" and its sort arrow on one line beside long texts.
WRONG_WIDTHS = ["40%", "11%", "11%", "13%", "25%"]
GENERATION_HEADERS = [
    "prompt",
    "reference",
    "generated",
    "exact match",
    "generated before",
    "exact match before",
]
PARTS = ("confusion-before", "confusion", "per-class", "wrong", "generation")


# Actions (the page and the API) -------------------------------------------------------------


def job_insights(job_id: int) -> dict:
    """The validation insights of one of this person's training jobs (the API's answer)."""
    seen = access.job_insights(int(job_id), actor=current_actor())
    if seen is None:
        raise DataError(
            f"Job #{int(job_id)} has no validation insights: they are measured when a training "
            "job finishes with validation rows. A queued, running, failed, cancelled or predict "
            "job has none."
        )
    return seen


# Tables and pictures ------------------------------------------------------------------------


def _score(value) -> float | None:
    return round(float(value), 4) if isinstance(value, int | float) else None


def per_class_table(seen: dict) -> pd.DataFrame:
    """One row per class: precision, recall, F1, support after tuning, then before."""
    before = {r["label"]: r for r in (seen.get("before") or {}).get("per_class") or []}
    rows = []
    for row in (seen.get("after") or {}).get("per_class") or []:
        old = before.get(row["label"], {})
        rows.append(
            [str(row["label"])]
            + [_score(row.get(k)) for k in ("precision", "recall", "f1")]
            + [int(row.get("support") or 0)]
            + [_score(old.get(k)) for k in ("precision", "recall", "f1")]
        )
    return pd.DataFrame(rows, columns=PER_CLASS_HEADERS)


def _probabilities(probs: dict) -> str:
    known = [(label, p) for label, p in probs.items() if isinstance(p, int | float)]
    ranked = sorted(known, key=lambda item: -item[1])
    return " · ".join(f"{label} {p:.3f}" for label, p in ranked)


def wrong_table(seen: dict) -> pd.DataFrame:
    """The tuned adapter's mistakes, most confident first; confidence stays a number."""
    rows = [
        [
            str(w.get("text", "")),
            str(w.get("true", "")),
            str(w.get("predicted", "")),
            float(w.get("confidence") or 0.0),
            _probabilities(w.get("probs") or {}),
        ]
        for w in (seen.get("after") or {}).get("wrong") or []
    ]
    return pd.DataFrame(rows, columns=WRONG_HEADERS).astype({"confidence": "float64"})


def generation_table(seen: dict) -> pd.DataFrame:
    """Each validation prompt with its reference, the tuned and the untuned generation."""
    after = (seen.get("after") or {}).get("rows") or []
    before = (seen.get("before") or {}).get("rows") or []
    rows = []
    for i, row in enumerate(after):
        old = before[i] if i < len(before) else {}
        rows.append(
            [
                str(row.get("prompt", "")),
                str(row.get("reference", "")),
                str(row.get("generated", "")),
                "yes" if row.get("exact_match") else "no",
                str(old.get("generated", "")),
                ("yes" if old.get("exact_match") else "no") if old else "",
            ]
        )
    return pd.DataFrame(rows, columns=GENERATION_HEADERS)


def confusion_pictures(seen: dict):
    """(before, after) confusion matrices as images; None for a side not measured."""
    pictures = []
    for side, title in (("before", "Before tuning"), ("after", "After tuning")):
        part = seen.get(side) or {}
        counts, labels = part.get("confusion"), part.get("confusion_labels") or seen.get("labels")
        pictures.append(confusion_image(counts, list(labels or []), title) if counts else None)
    return tuple(pictures)


def _served(image, name: str):
    """What the page's gr.Image gets: the picture itself for the local user (Gradio caches it
    as PNG); with sign-in, a PNG copy in Gradio's cache that only this person may fetch
    (app.uploads serves cache files to their owner only)."""
    if image is None or not access_mode.active().multi_user:
        return image
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.png"
        image.save(path, format="PNG")
        return servable(path)  # copied before the folder goes


def _change(seen: dict, key: str) -> str:
    before = (seen.get("before") or {}).get(key)
    after = (seen.get("after") or {}).get(key)
    if not isinstance(after, int | float):
        return ""
    if not isinstance(before, int | float):
        return f"{after:.3f}"
    return f"{before:.3f} before tuning → {after:.3f} after"


def summary_html(seen: dict) -> str:
    """A line on what was measured and how the main score moved."""
    rows, total = int(seen.get("rows") or 0), int(seen.get("rows_total") or 0)
    looked = f"{rows} of {total} validation rows" if rows < total else f"{rows} validation rows"
    if seen.get("task") == "generate":
        facts = [f"Exact match on {looked}: {_change(seen, 'exact_match')}"]
    else:
        after = seen.get("after") or {}
        shown, wrong = len(after.get("wrong") or []), int(after.get("wrong_total") or 0)
        facts = [
            f"Accuracy on {looked}: {_change(seen, 'accuracy')}",
            f"{wrong} wrong after tuning"
            + (f" (the {shown} most confident listed)" if shown < wrong else ""),
        ]
    return (
        '<div class="insights-summary"><h3>Validation insights</h3><p>'
        + html.escape(" · ".join(facts))
        + "</p></div>"
    )


# The block -----------------------------------------------------------------------------------


@dataclass
class InsightsBlock:
    box: gr.Column
    summary: gr.HTML
    confusion_before: gr.Image
    confusion: gr.Image
    per_class: gr.Dataframe
    wrong: gr.Dataframe
    generation: gr.Dataframe

    @property
    def outputs(self) -> list:
        return [
            self.box,
            self.summary,
            self.confusion_before,
            self.confusion,
            self.per_class,
            self.wrong,
            self.generation,
        ]


def _image(label: str, elem_id: str, part: str) -> gr.Image:
    return gr.Image(
        label=label,
        show_label=False,  # the picture carries its own title (kept in a download)
        type="pil",
        format="png",
        interactive=False,
        buttons=["download"],
        elem_id=elem_id,
        elem_classes=[f"insights-{part}"],
    )


def block(container_id: str, prefix: str) -> InsightsBlock:
    """The hidden block: `container_id` on its column, `prefix`-<part> on its parts (each part
    also has the class insights-<part>, the same in both tabs)."""
    ids = {part: f"{prefix}-{part}" for part in PARTS}
    with gr.Column(visible=False, elem_id=container_id) as box:
        summary = gr.HTML(elem_id=f"{prefix}-summary")
        with gr.Row():
            before = _image("Confusion matrix before tuning", ids["confusion-before"], PARTS[0])
            after = _image("Confusion matrix after tuning", ids["confusion"], PARTS[1])
        per_class = gr.Dataframe(
            headers=PER_CLASS_HEADERS,
            label="Per class, after tuning and before",
            interactive=False,
            elem_id=ids["per-class"],
            elem_classes=["insights-per-class"],
        )
        wrong = gr.Dataframe(
            headers=WRONG_HEADERS,
            datatype=WRONG_TYPES,
            column_widths=WRONG_WIDTHS,
            label="Validation rows it gets wrong, most confident first (a header's ⋮ menu sorts)",
            interactive=False,
            wrap=True,
            max_height=420,
            elem_id=ids["wrong"],
            elem_classes=["insights-wrong"],
        )
        generation = gr.Dataframe(
            headers=GENERATION_HEADERS,
            label="Validation prompts: reference and generations",
            interactive=False,
            wrap=True,
            max_height=420,
            elem_id=ids["generation"],
            elem_classes=["insights-generation"],
        )
    return InsightsBlock(box, summary, before, after, per_class, wrong, generation)


def hidden() -> tuple:
    """Updates that hide the block (and drop what it showed)."""
    return (gr.Column(visible=False), "", None, None, None, None, None)


def shown(seen: dict | None) -> tuple:
    """Updates that show `seen` in the block: classification or generation parts."""
    if not seen:
        return hidden()
    classify = seen.get("task") != "generate"
    before, after = confusion_pictures(seen) if classify else (None, None)
    return (
        gr.Column(visible=True),
        summary_html(seen),
        gr.Image(
            value=_served(before, "confusion-before"), format="png", visible=before is not None
        ),
        gr.Image(value=_served(after, "confusion-after"), format="png", visible=after is not None),
        gr.Dataframe(value=per_class_table(seen), visible=classify),
        gr.Dataframe(value=wrong_table(seen), visible=classify),
        gr.Dataframe(value=generation_table(seen), visible=not classify),
    )


# Wiring --------------------------------------------------------------------------------------


def job_view(job_id, drawn):
    """The Jobs tab's block for the selected job, redrawn only when its insights appear."""
    if job_id is None:
        return (*hidden(), None)
    try:
        job = access.get_job(int(job_id), actor=current_actor())
    except Exception:  # gone, or not theirs: nothing to show
        return (*hidden(), None)
    key = f"{job.id}:{job.has_insights}"
    if key == drawn:
        return (*(gr.skip(),) * 7, drawn)
    if not job.has_insights:
        return (*hidden(), key)
    try:
        return (*shown(access.job_insights(job.id, actor=current_actor())), key)
    except Exception as error:  # drawn on a timer: a problem is logged, the block hidden
        logger.warning("insights of job %s not shown: %s", job_id, error)
        return (*hidden(), None)


def adapter_view(adapter_id):
    """The Adapters tab's block: the insights of the job that trained the adapter."""
    if adapter_id is None:
        return hidden()
    try:
        return shown(access.adapter_insights(int(adapter_id), actor=current_actor()))
    except Exception as error:
        logger.info("insights of adapter %s not shown: %s", adapter_id, error)
        return hidden()


def follow_job(selected: gr.Dropdown, timer: gr.Timer, demo: gr.Blocks) -> InsightsBlock:
    """The Jobs tab's block (elem_id "insights"), kept on the selected job."""
    shown_block = block("insights", "insights")
    drawn = gr.State(None)
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    for trigger in (timer.tick, demo.load, selected.change):
        trigger(job_view, [selected, drawn], [*shown_block.outputs, drawn], **quiet)
    return shown_block


def adapter_block() -> InsightsBlock:
    """The Adapters tab's block (elem_id "adapter-insights")."""
    return block("adapter-insights", "adapter-insights")


def follow_adapter(event, selected: gr.Dropdown, shown_block: InsightsBlock):
    """Chain the block's redraw after `event` (one that shows an adapter); returns the chain."""
    return event.then(
        adapter_view,
        selected,
        shown_block.outputs,
        api_visibility="private",
        show_progress="hidden",
    )
