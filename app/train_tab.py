"""The Train tab: pick a model and a dataset, see what IA3 will train, and queue one job.

Every check shows its message under the field it is about; nothing here trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from app import job_files, preview, settings, uploads
from app.messages import explain, field_note, note_box
from app.studio_config import StudioConfig

logger = logging.getLogger(__name__)

SOURCES = ("Bundled", "Hugging Face Hub id", "Local folder")
DATA_SOURCES = ("Sample", "Upload a file")
TASKS = [("Classify: text -> label", "classify"), ("Generate: prompt -> response", "generate")]
TARGET_HEADERS = ["module", "layer type", "feed-forward", "vector size"]


@dataclass
class TrainTab:
    queue_button: gr.Button
    queued_job: gr.Number  # id of the job just queued (hidden), for the Jobs tab to select
    queue_event: object  # the click dependency, so main can chain a tab switch on it


@dataclass
class DataSection:
    """The data step's components, by name."""

    source: gr.Radio
    sample: gr.Dropdown
    upload: gr.File
    note: gr.HTML
    task: gr.Radio
    text_col: gr.Dropdown
    label_col: gr.Dropdown
    mapping_note: gr.HTML
    summary: gr.Markdown
    balance: gr.Label
    rows: gr.Dataframe


def _model_name(source, bundled, hub_id, folder) -> str:
    return {"Bundled": bundled, "Hugging Face Hub id": hub_id, "Local folder": folder}.get(
        source, bundled
    ) or ""


def _show_model(source, bundled, hub_id, folder, task):
    """Summary markdown, target table and note for the chosen model."""
    name = _model_name(source, bundled, hub_id, folder).strip()
    empty = gr.Dataframe(value=pd.DataFrame(columns=TARGET_HEADERS), visible=False)
    if not name:
        return "", empty, field_note("Type a model id or folder, then press Enter.", "info")
    try:
        info = preview.describe_model(name, task)
    except Exception as error:  # shown under the model field
        return "", empty, field_note(explain(error))
    rows = [
        [r["module"], r["layer_type"], "yes" if r["feedforward"] else "no", r["params"]]
        for r in info["targets"]
    ]
    ff = sum(1 for r in info["targets"] if r["feedforward"])
    share = 100 * info["trainable_params"] / max(info["total_params"], 1)
    how = {
        "table": "from the built-in table for this architecture",
        "structural": "found by structure (this architecture is not in the built-in table)",
    }.get(info["source"], "as configured")
    head = info.get("head_params") or 0
    summary = (
        f"**{info['architecture']}** ({info['model_type']}) · "
        f"{info['total_params']:,} parameters\n\n"
        f"IA3 scales **{len(rows)} modules** ({ff} feed-forward, {len(rows) - ff} attention), "
        f"{how}, and trains **{info['trainable_params']:,} parameters** ({share:.3f} % of the "
        "model)" + (f", of which {head:,} in the new classification head." if head else ".")
    )
    table = gr.Dataframe(value=pd.DataFrame(rows, columns=TARGET_HEADERS), visible=True)
    return summary, table, field_note("Model found.", "ok")


def _column_labels(task) -> tuple[str, str]:
    if task == "generate":
        return "Prompt column", "Response column"
    return "Text column", "Label column"


def _column_dropdowns(task, columns=(), text=None, label=None):
    """Updates for the two mapping dropdowns, named for the task (empty without columns)."""
    text_label, label_label = _column_labels(task)
    return (
        gr.Dropdown(choices=list(columns), value=text, label=text_label),
        gr.Dropdown(choices=list(columns), value=label, label=label_label),
    )


def _dataset_views(info: dict):
    """Summary markdown, class balance and preview table for a described dataset."""
    counts = info["class_counts"]
    total = sum(counts.values()) or 1
    balance = {label: count / total for label, count in counts.items()}
    summary = (
        f"**{info['file'].rsplit('/', 1)[-1]}** · {info['format']} · {info['n_rows']:,} rows · "
        f"columns: {', '.join(info['columns'])}"
    )
    if counts:
        shown = ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:12])
        summary += f"\n\n{len(counts)} label{'s' if len(counts) > 1 else ''}: {shown}" + (
            " …" if len(counts) > 12 else ""
        )
    return (
        summary,
        gr.Label(value=balance or None, visible=bool(counts)),
        gr.Dataframe(value=pd.DataFrame(info["preview"][:8]), visible=True),
    )


def _no_data(task, data_message: str, kind: str = "error"):
    """Outputs for a dataset that cannot be shown: cleared mapping and views, one message."""
    text_dd, label_dd = _column_dropdowns(task)
    hidden = (gr.Label(value=None, visible=False), gr.Dataframe(value=None, visible=False))
    return ("", text_dd, label_dd, "", *hidden, field_note(data_message, kind), "")


def _describe(path, text_column, label_column, task, remap):
    """Outputs for the data views; `remap` refreshes the column choices and guesses too.

    Outputs: path, text dropdown, label dropdown, summary, balance, rows, data note, mapping note.
    """
    if not path:
        return _no_data(task, "Choose a sample or upload a file.", "info")
    try:
        info = preview.describe_dataset(
            path, None if remap else text_column, None if remap else label_column, task
        )
    except Exception as error:  # a file problem goes under the file, a mapping one under it
        if remap:
            return _no_data(task, explain(error))
        keep = (gr.skip(),) * 5
        return (path, *keep, gr.skip(), field_note(explain(error)))
    if remap:
        text_dd, label_dd = _column_dropdowns(
            task, info["columns"], info["text_column"], info["label_column"]
        )
    else:
        text_dd, label_dd = gr.skip(), gr.skip()
    summary, balance, rows = _dataset_views(info)
    data_note = field_note(f"Read {info['n_rows']:,} rows.", "ok")
    warnings = info["warnings"]
    mapping_note = (
        field_note("\n".join(warnings)) if warnings else field_note("Columns mapped.", "ok")
    )
    return path, text_dd, label_dd, summary, balance, rows, data_note, mapping_note


def _choose_data(source, sample, upload, text_column, label_column, task, config: StudioConfig):
    if source == "Sample":
        path = preview.sample_datasets().get(sample, "")
    elif upload:
        try:  # only a file this person uploaded; previewed where it is, never copied
            path = uploads.uploaded_file(upload)
        except Exception as error:
            return _no_data(task, explain(error))
    else:
        path = ""
    return _describe(path, text_column, label_column, task, remap=True)


def _queue(form, data_dir, model_src, bundled_name, hub, local, path, task, text, label, *values):
    """Queue the form as a job: (note under the button, job id or None)."""
    model = _model_name(model_src, bundled_name, hub, local).strip()
    fields = settings.spec_fields(form, values)
    fields.update(model=model, task=task, text_column=text, label_column=label)
    files = {}
    if eval_path := preview.sample_eval_file(path or ""):
        fields.update(data=path, eval_data=fields.get("eval_data") or eval_path)
    elif path in preview.sample_datasets().values():
        fields["data"] = path
    else:
        files["data"] = path  # an upload of this person's (the page keeps the path, not them)
    try:
        job_id = job_files.enqueue_with_uploads(fields, files, data_dir)
    except Exception as error:
        return field_note(explain(error)), None
    return field_note(f"Job #{job_id} queued. Follow it in the Jobs tab.", "ok"), job_id


def _model_section(config: StudioConfig):
    gr.Markdown("### 1 · Model", elem_classes=["step-title"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            source = gr.Radio(list(SOURCES), value="Bundled", label="Where the model comes from")
            bundled = gr.Dropdown(
                preview.bundled_models(),
                value=config.model,
                label="Bundled model",
                info="Ships with the studio; works offline.",
                elem_id="bundled-model",
            )
            hub_id = gr.Textbox(
                label="Hugging Face Hub id",
                placeholder="e.g. distilbert/distilbert-base-uncased, then press Enter",
                visible=False,
                elem_id="hub-id",
            )
            folder = gr.Textbox(
                label="Local folder",
                placeholder="/path/to/a/saved/model, then press Enter",
                visible=False,
                elem_id="model-folder",
            )
            model_note = note_box("model-note")
        with gr.Column(scale=3, min_width=320):
            summary = gr.Markdown("Inspecting the model…", elem_id="model-summary")
            targets = gr.Dataframe(
                headers=TARGET_HEADERS,
                label="Modules IA3 will scale",
                interactive=False,
                max_height=240,
                elem_id="model-targets",
            )
    source.change(
        lambda s: (
            (gr.update(visible=s == SOURCES[0]),)
            + (gr.update(visible=s == SOURCES[1]), gr.update(visible=s == SOURCES[2]))
        ),
        source,
        [bundled, hub_id, folder],
        api_visibility="private",
    )
    return source, bundled, hub_id, folder, model_note, summary, targets


def _data_section(config: StudioConfig) -> DataSection:
    gr.Markdown("### 2 · Data", elem_classes=["step-title"])
    samples = preview.sample_datasets()
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            data_source = gr.Radio(list(DATA_SOURCES), value="Sample", label="Dataset")
            sample = gr.Dropdown(
                list(samples),
                value=config.sample if config.sample in samples else next(iter(samples), None),
                label="Sample dataset",
                info="Small datasets shipped with the studio.",
                elem_id="sample",
            )
            upload = gr.File(
                label="Your dataset: CSV, TSV, JSONL or Parquet",
                file_types=list(preview.DATA_SUFFIXES),
                type="filepath",
                visible=False,
                elem_id="data-upload",
            )
            data_note = note_box("data-note")
            task = gr.Radio(TASKS, value="classify", label="Task", elem_id="task")
            with gr.Row():
                text_col = gr.Dropdown(label="Text column", elem_id="text-column")
                label_col = gr.Dropdown(label="Label column", elem_id="label-column")
            mapping_note = note_box("mapping-note")
        with gr.Column(scale=3, min_width=320):
            summary = gr.Markdown(elem_id="data-summary")
            balance = gr.Label(
                label="Label set and class balance", show_heading=False, elem_id="class-balance"
            )
            rows = gr.Dataframe(
                label="First rows", interactive=False, max_height=240, elem_id="data-preview"
            )
    data_source.change(
        lambda s: (gr.update(visible=s == "Sample"), gr.update(visible=s != "Sample")),
        data_source,
        [sample, upload],
        api_visibility="private",
    )
    return DataSection(
        data_source,
        sample,
        upload,
        data_note,
        task,
        text_col,
        label_col,
        mapping_note,
        summary,
        balance,
        rows,
    )


def build(demo: gr.Blocks, config: StudioConfig) -> TrainTab:
    """Lay out the tab and wire its events; returns what other tabs chain on."""
    source, bundled, hub_id, folder, model_note, model_summary, targets = _model_section(config)
    data = _data_section(config)
    task, text_col, label_col = data.task, data.text_col, data.label_col
    data_path = gr.State("")
    form = settings.build(config)
    queue_button = gr.Button("Queue training", variant="primary", elem_id="queue-button")
    queue_note = note_box("queue-note")
    queued_job = gr.Number(visible=False, precision=0)

    model_inputs = [source, bundled, hub_id, folder, task]
    model_outputs = [model_summary, targets, model_note]
    model_triggers = [bundled.change, hub_id.submit, folder.submit, source.change, task.change]
    # One listener for every trigger, so a page runs them one after the other and shows the
    # last: with one each, switching the source and pressing Enter at once ran two in parallel,
    # and whichever finished last (the older) stayed on the page.
    gr.on(
        model_triggers,
        _show_model,
        model_inputs,
        model_outputs,
        trigger_mode="always_last",
        api_visibility="private",
    )
    gr.on(model_triggers, lambda: "", None, queue_note, api_visibility="private")  # stale now

    data_views = [
        data_path,
        text_col,
        label_col,
        data.summary,
        data.balance,
        data.rows,
        data.note,
        data.mapping_note,
    ]
    choose = [data.source, data.sample, data.upload, text_col, label_col, task]
    for trigger in (data.source.change, data.sample.change, data.upload.change):
        trigger(lambda *a: _choose_data(*a, config), choose, data_views, api_visibility="private")
        trigger(lambda: "", None, queue_note, api_visibility="private")
    mapping = [data_path, text_col, label_col, task]
    remap = lambda p, t, lab, k: _describe(p, t, lab, k, remap=True)  # noqa: E731
    keep = lambda p, t, lab, k: _describe(p, t, lab, k, remap=False)  # noqa: E731
    for trigger in (text_col.input, label_col.input):
        trigger(keep, mapping, data_views, api_visibility="private")
    # Another task reads other columns (prompt/response), so the guesses start over.
    task.change(remap, mapping, data_views, api_visibility="private")

    queue_inputs = [source, bundled, hub_id, folder, data_path, task, text_col, label_col]
    queue_event = queue_button.click(
        lambda *values: _queue(form, config.data_dir, *values),
        queue_inputs + form.inputs(),
        [queue_note, queued_job],
        api_visibility="private",
    )
    # Two separate loads, so the data preview does not wait for the model to load.
    demo.load(_show_model, model_inputs, model_outputs, api_visibility="private")
    demo.load(lambda *a: _choose_data(*a, config), choose, data_views, api_visibility="private")
    return TrainTab(queue_button, queued_job, queue_event)
