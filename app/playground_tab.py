"""The Playground tab: one input through the untuned base and each chosen adapter, side by side.

Classification shows label probabilities as bars, generation shows text; a mix of the chosen
adapters with weights runs beside them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app import adapter_actions, serving
from app.messages import explain, field_note, note_box

logger = logging.getLogger(__name__)

MAX_ADAPTERS = 4  # side-by-side columns besides the base; more would be unreadable


@dataclass
class Slot:
    """One column of outputs: a title, label bars (classify) and text (generate)."""

    column: gr.Column
    title: gr.Markdown
    label: gr.Label
    text: gr.Textbox

    def outputs(self) -> list:
        return [self.column, self.title, self.label, self.text]


@dataclass
class PlaygroundTab:
    adapters: gr.Dropdown  # multiselect of adapter ids


def adapter_choices() -> list[tuple[str, int]]:
    return [
        (f"#{a['id']} {a['name']} · {a['task']} · {a['base_model']}", a["id"])
        for a in adapter_actions.list_adapters()
    ]


def _slot(key: str, title: str, visible: bool) -> Slot:
    with gr.Column(
        min_width=220, visible=visible, elem_classes=["play-slot"], elem_id=f"{key}"
    ) as column:
        heading = gr.Markdown(f"**{title}**", elem_id=f"{key}-title")
        label = gr.Label(label="Label probabilities", num_top_classes=6, elem_id=f"{key}-label")
        text = gr.Textbox(
            label="Output", lines=4, visible=False, interactive=False, elem_id=f"{key}-text"
        )
    return Slot(column, heading, label, text)


def _fill(slot_values: list[tuple[str, dict | None]], count: int) -> list:
    """Updates for `count` slots from (title, output) pairs; the rest are hidden."""
    updates = []
    for i in range(count):
        if i >= len(slot_values):
            updates += [gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip()]
            continue
        title, output = slot_values[i]
        output = output or {}
        is_text = "text" in output
        updates += [
            gr.Column(visible=True),
            f"**{title}**",
            gr.Label(value=output.get("probs"), visible=not is_text),
            gr.Textbox(value=output.get("text", ""), visible=is_text),
        ]
    return updates


def _compare(text, adapter_ids, include_base):
    try:
        result = serving.compare(text, adapter_ids or [], include_base=bool(include_base))
    except Exception as error:
        return [field_note(explain(error))] + _fill([], 1 + MAX_ADAPTERS)
    values = []
    if include_base:
        values.append((f"Untuned base: {result['base_model']}", result["base"]))
    else:
        values.append(("Untuned base (hidden)", None))
    values += [(f"#{a['id']} {a['name']}", a) for a in result["adapters"][:MAX_ADAPTERS]]
    note = (
        ""
        if len(adapter_ids or []) <= MAX_ADAPTERS
        else field_note(f"Showing the first {MAX_ADAPTERS} adapters.", "info")
    )
    updates = _fill(values, 1 + MAX_ADAPTERS)
    if not include_base:
        updates[0] = gr.Column(visible=False)
    return [note] + updates


def _mix(text, adapter_ids, *weights):
    try:
        chosen = list(adapter_ids or [])
        result = serving.mix(text, chosen, list(weights[: len(chosen)]))
    except Exception as error:
        return [field_note(explain(error))] + _fill([], 1)
    shown = ", ".join(f"{w:g} × #{i}" for i, w in zip(chosen, weights, strict=False))
    return [""] + _fill([(f"Mix: {shown}", result)], 1)


def _weight_sliders(adapter_ids):
    chosen = list(adapter_ids or [])
    names = {a["id"]: f"#{a['id']} {a['name']}" for a in adapter_actions.list_adapters()}
    return [
        gr.Slider(
            visible=i < len(chosen),
            label=f"Weight of {names.get(chosen[i], chosen[i])}" if i < len(chosen) else "Weight",
            value=round(1 / max(len(chosen), 1), 2),
        )
        for i in range(MAX_ADAPTERS)
    ]


def _mix_section():
    """Weight sliders (one per chosen adapter), the mix button, its note and its output."""
    with gr.Accordion("Mix the chosen adapters with weights", open=False, elem_id="mix"):
        gr.Markdown(
            "Each IA3 vector of the mix is the weighted sum of the chosen adapters' vectors."
        )
        with gr.Row():
            weights = [
                gr.Slider(
                    -1.0,
                    2.0,
                    value=0.5,
                    step=0.05,
                    label="Weight",
                    visible=False,
                    elem_id=f"mix-weight-{i}",
                )
                for i in range(MAX_ADAPTERS)
            ]
        mix = gr.Button("Run the mix", elem_id="mix-run")
        mix_note = note_box()
        mix_slot = _slot("slot-mix", "Mix", False)
    return weights, mix, mix_note, mix_slot


def build(demo: gr.Blocks) -> PlaygroundTab:
    """Lay out the tab and wire compare and mix."""
    gr.Markdown(
        "Pick adapters trained on one base model, type an input and press **Compare**. The "
        "untuned base model runs beside them, so you see what tuning changed. (An encoder has "
        "no classification head of its own, so its untuned side keeps the adapter's trained "
        "head and shows what the IA3 vectors add.)"
    )
    with gr.Row(equal_height=False):
        adapters = gr.Dropdown(
            label="Adapters to compare (of one base model)",
            multiselect=True,
            choices=[],
            scale=5,
            elem_id="play-adapters",
        )
        refresh = gr.Button(
            "Refresh list", size="sm", scale=0, min_width=120, elem_id="play-refresh"
        )
    text = gr.Textbox(
        label="Input",
        lines=3,
        placeholder="Type a sentence, e.g. 'A warm, funny film.'",
        elem_id="play-input",
    )
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="play-run", scale=3)
        include_base = gr.Checkbox(
            value=True, label="Show the untuned base model", elem_id="play-base", scale=2
        )
    note = note_box("play-note")
    with gr.Row(equal_height=False):
        slots = [_slot("slot-base", "Untuned base", True)] + [
            _slot(f"slot-{i + 1}", f"Adapter {i + 1}", False) for i in range(MAX_ADAPTERS)
        ]
    weights, mix, mix_note, mix_slot = _mix_section()
    outputs = [note] + [c for s in slots for c in s.outputs()]
    run.click(_compare, [text, adapters, include_base], outputs, api_visibility="private")
    text.submit(_compare, [text, adapters, include_base], outputs, api_visibility="private")
    mix.click(
        _mix, [text, adapters] + weights, [mix_note] + mix_slot.outputs(), api_visibility="private"
    )
    adapters.change(_weight_sliders, adapters, weights, api_visibility="private")
    for trigger in (refresh.click, demo.load):
        trigger(
            lambda: gr.Dropdown(choices=adapter_choices()), None, adapters, api_visibility="private"
        )
    return PlaygroundTab(adapters)
