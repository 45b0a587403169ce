"""The Adapters tab: the registry with search and filters, and one adapter's card and actions.

Download the zip or single files, rename, delete (with a confirmation), export a merged model,
and import an adapter made elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import adapter_actions, insights_view, publish_view, uploads
from app.messages import explain, field_note, note_box

logger = logging.getLogger(__name__)

TABLE_HEADERS = [
    "id",
    "name",
    "base model",
    "task",
    "labels",
    "main metric",
    "trainable",
    "created",
]
ALL = ""


@dataclass
class AdaptersTab:
    refresh_on: Callable  # refresh_on(event_listener): re-read the list and the chosen adapter
    selected: gr.Dropdown


def _main_metric(metrics: dict) -> str:
    for key in ("accuracy", "eval_accuracy", "exact_match", "f1", "eval_loss", "loss"):
        if isinstance(metrics.get(key), int | float):
            return f"{key} {metrics[key]:.3f}"
    return "—"


def adapters_table(adapters: list[dict]) -> pd.DataFrame:
    rows = [
        [
            a["id"],
            a["name"],
            a["base_model"],
            a["task"],
            ", ".join(map(str, a.get("labels") or []))[:60],
            _main_metric(a.get("metrics") or {}),
            f"{a.get('trainable_params') or 0:,}",
            str(a.get("created_at") or "")[:16].replace("T", " "),
        ]
        for a in adapters
    ]
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def list_view(search, base_model, task, selected):
    """Table, base-model filter choices, adapter choices, note."""
    try:
        everything = adapter_actions.list_adapters()
        shown = adapter_actions.list_adapters(search=search, base_model=base_model, task=task)
    except Exception as error:
        return gr.skip(), gr.skip(), gr.skip(), field_note(explain(error))
    bases = sorted({a["base_model"] for a in everything})
    choices = [(f"#{a['id']} {a['name']}", a["id"]) for a in shown]
    ids = [a["id"] for a in shown]
    value = selected if selected in ids else (ids[0] if ids else None)
    empty = "" if everything else field_note("No adapters yet: train one in the Train tab.", "info")
    return (
        adapters_table(shown),
        gr.Dropdown(choices=[("All base models", ALL)] + [(b, b) for b in bases]),
        gr.Dropdown(choices=choices, value=value),
        empty,
    )


def _details(adapter_id):
    """Whether the detail panel shows, then header, metrics, card, zip, files, rename box."""
    if adapter_id is None:
        return gr.Row(visible=False), "", None, "", None, None, ""
    try:
        info = adapter_actions.adapter_info(int(adapter_id))
        zip_path = adapter_actions.adapter_zip(int(adapter_id))
        files = [str(p) for p in adapter_actions.adapter_files(int(adapter_id))]
    except Exception as error:
        return gr.Row(visible=True), field_note(explain(error)), None, "", None, None, ""
    header = (
        f"### {info['name']}\n"
        f"Adapter #{info['id']} · {info['task']} · base model `{info['base_model']}` · "
        f"{info.get('trainable_params') or 0:,} trainable parameters · "
        f"{(info.get('size_bytes') or 0) / 1024:.1f} KiB\n\n"
        f"Labels: {', '.join(map(str, info.get('labels') or [])) or '—'}\n\n"
        f"Shareable page: [/adapters/{info['id']}](/adapters/{info['id']})"
    )
    metrics = pd.DataFrame(
        [
            [k, f"{v:.4f}" if isinstance(v, float) else str(v)]
            for k, v in (info.get("metrics") or {}).items()
        ],
        columns=["metric", "value"],
    )
    card = info.get("card") or ""
    return gr.Row(visible=True), header, metrics, card, zip_path, files, info["name"]


def _act(action, message):
    def handler(adapter_id, *args):
        if adapter_id is None:
            return field_note("Pick an adapter first.", "info")
        try:
            action(int(adapter_id), *args)
        except Exception as error:
            return field_note(explain(error))
        return field_note(message.format(id=adapter_id), "ok")

    return handler


def _export(adapter_id):
    hidden = gr.File(value=None, visible=False)
    if adapter_id is None:
        return field_note("Pick an adapter first.", "info"), hidden
    try:
        path = adapter_actions.export_merged(int(adapter_id))
    except Exception as error:
        return field_note(explain(error)), hidden
    done = field_note(
        "Merged model ready: the base model's weights with the adapter built in.", "ok"
    )
    return done, gr.File(value=path, visible=True)


def _import(path, base_model, name):
    try:
        # Only a zip this person uploaded, never a path on the server.
        adapter_id = adapter_actions.import_adapter(uploads.uploaded_file(path), base_model, name)
    except Exception as error:
        return field_note(explain(error))
    return field_note(f"Imported as adapter #{adapter_id}.", "ok")


def _list_section() -> SimpleNamespace:
    with gr.Row():
        search = gr.Textbox(
            label="Search",
            placeholder="name, base model or label",
            scale=3,
            elem_id="adapter-search",
        )
        base_filter = gr.Dropdown(
            [("All base models", ALL)],
            value=ALL,
            label="Base model",
            scale=2,
            elem_id="adapter-base",
        )
        task_filter = gr.Dropdown(
            [("All tasks", ALL), ("classify", "classify"), ("generate", "generate")],
            value=ALL,
            label="Task",
            scale=1,
            elem_id="adapter-task",
        )
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        label="Registered adapters",
        interactive=False,
        max_height=300,
        elem_id="adapters-table",
    )
    return SimpleNamespace(
        search=search,
        base_filter=base_filter,
        task_filter=task_filter,
        table=table,
        note=note_box(),
    )


def _facts_column() -> SimpleNamespace:
    with gr.Column(scale=3, min_width=360):
        selected = gr.Dropdown(label="Adapter", choices=[], elem_id="adapter-select")
        header = gr.Markdown(elem_id="adapter-header")
        metrics = gr.Dataframe(
            headers=["metric", "value"],
            label="Metrics",
            interactive=False,
            elem_id="adapter-metrics",
        )
        with gr.Accordion("Model card", open=False):
            card = gr.Markdown(elem_id="adapter-card")
        publish_view.build(selected)  # the accordion "Publish to the Hugging Face Hub"
    return SimpleNamespace(selected=selected, header=header, metrics=metrics, card=card)


def _actions_column() -> SimpleNamespace:
    with gr.Column(scale=2, min_width=300):
        download = gr.DownloadButton(
            "Download adapter (.zip)", variant="primary", elem_id="adapter-download"
        )
        files = gr.File(
            label="Files, one by one",
            file_count="multiple",
            interactive=False,
            elem_id="adapter-files",
        )
        new_name = gr.Textbox(label="Name", elem_id="adapter-rename-box")
        rename = gr.Button("Rename", elem_id="adapter-rename")
        export = gr.Button("Export merged model", elem_id="adapter-export")
        merged = gr.File(
            label="Merged model (.zip)",
            interactive=False,
            visible=False,
            elem_id="adapter-merged",
        )
        with gr.Row():
            delete = gr.Button("Delete adapter", variant="stop", elem_id="adapter-delete")
            confirm = gr.Button(
                "Yes, delete it", variant="stop", visible=False, elem_id="adapter-confirm"
            )
        note = note_box("adapter-note")
    return SimpleNamespace(
        download=download,
        files=files,
        new_name=new_name,
        rename=rename,
        export=export,
        merged=merged,
        delete=delete,
        confirm=confirm,
        note=note,
    )


def _import_section() -> SimpleNamespace:
    with gr.Accordion("Import an adapter", open=False, elem_id="import"):
        with gr.Row():
            upload = gr.File(
                label="Adapter .zip in PEFT format",
                file_types=[".zip"],
                type="filepath",
                elem_id="import-file",
            )
            with gr.Column():
                base = gr.Textbox(
                    label="Base model it was trained on",
                    placeholder="minilm, a Hub id or a folder",
                    elem_id="import-base",
                )
                name = gr.Textbox(label="Name (optional)", elem_id="import-name")
                button = gr.Button("Import", elem_id="import-button")
                note = note_box("import-note")
    return SimpleNamespace(upload=upload, base=base, name=name, button=button, note=note)


def build(demo: gr.Blocks) -> AdaptersTab:
    """Lay out the tab and wire its events."""
    shown = _list_section()
    with gr.Row(equal_height=False, visible=False) as detail_row:  # shown once there is one
        facts, acts = _facts_column(), _actions_column()
    insights = insights_view.adapter_block()  # the training job's validation insights
    imports = _import_section()
    selected = facts.selected
    filters = [shown.search, shown.base_filter, shown.task_filter, selected]
    listing = [shown.table, shown.base_filter, selected, shown.note]
    details = [
        detail_row,
        facts.header,
        facts.metrics,
        facts.card,
        acts.download,
        acts.files,
        acts.new_name,
    ]
    private = {"api_visibility": "private"}

    def refresh_on(listener, *args, **kwargs):
        # The panel is hidden until there is an adapter, and a hidden dropdown fires no change
        # event, so the details are chained here rather than left to selected.change.
        shown_event = listener(*args, list_view, filters, listing, **kwargs, **private).then(
            _details, selected, details, **private
        )
        return insights_view.follow_adapter(shown_event, selected, insights)

    for trigger in (
        demo.load,
        shown.search.submit,
        shown.base_filter.input,
        shown.task_filter.input,
    ):
        refresh_on(trigger)
    picked = selected.input(_details, selected, details, **private)
    insights_view.follow_adapter(picked, selected, insights)
    clicked = shown.table.select(_pick_row, shown.table, selected, **private).then(
        _details, selected, details, **private
    )
    insights_view.follow_adapter(clicked, selected, insights)
    renamed = acts.rename.click(
        _act(adapter_actions.rename_adapter, "Renamed adapter #{id}."),
        [selected, acts.new_name],
        acts.note,
        **private,
    )
    refresh_on(renamed.then)
    acts.delete.click(lambda: gr.Button(visible=True), None, acts.confirm, **private)
    deleted = acts.confirm.click(
        _act(adapter_actions.delete_adapter, "Deleted adapter #{id}."),
        selected,
        acts.note,
        **private,
    ).then(lambda: gr.Button(visible=False), None, acts.confirm, **private)
    refresh_on(deleted.then)
    acts.export.click(_export, selected, [acts.note, acts.merged], **private)
    imported = imports.button.click(
        _import, [imports.upload, imports.base, imports.name], imports.note, **private
    )
    refresh_on(imported.then)
    return AdaptersTab(refresh_on, selected)


def _pick_row(table: pd.DataFrame, event: gr.SelectData):
    row = event.index[0] if isinstance(event.index, list | tuple) else event.index
    return int(table.iloc[row]["id"])
