"""The Train tab's settings: a preset and advanced hyperparameters as sliders and dropdowns.

Choosing a preset fills the advanced controls with its values; what is sent is what is shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app.studio_config import StudioConfig
from ia3engine.training.spec import PRESETS

logger = logging.getLogger(__name__)

LEARNING_RATES = [(f"{v:g}", v) for v in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]
QUANTIZE = [
    ("Full precision", "none"),
    ("8-bit (bitsandbytes)", "8bit"),
    ("4-bit (bitsandbytes)", "4bit"),
]
OPTIMIZERS = [("AdamW", "adamw"), ("Adafactor", "adafactor")]
# "auto" leaves the share to the row count (TrainSpec.val_fraction None): tiny sets keep every row
VAL_SHARES = [
    ("Auto: 10% from 500 rows up, else none", "auto"),
    ("None: every row trains", 0.0),
    *[(f"{round(v * 100)}%", v) for v in (0.05, 0.1, 0.2, 0.3, 0.5)],
]
PRESET_HELP = {
    "quick": "good results on a CPU in about a minute on a few hundred rows",
    "tfew": "the T-Few paper's recipe: 1000 steps, batch 8, lr 3e-3, Adafactor",
}


def presets() -> dict[str, dict]:
    """Preset name -> its hyperparameters, from ia3engine.training.spec."""
    return {name: dict(values) for name, values in PRESETS.items()}


@dataclass
class SettingsForm:
    """The controls in the order their values are passed to handlers."""

    preset: gr.Radio
    name: gr.Textbox
    steps: gr.Slider
    lr: gr.Dropdown
    batch_size: gr.Dropdown
    max_length: gr.Slider
    val_fraction: gr.Dropdown
    eval_every: gr.Slider
    optimizer: gr.Dropdown
    quantize: gr.Dropdown
    seed: gr.Slider

    FIELDS = (
        "preset",
        "name",
        "steps",
        "lr",
        "batch_size",
        "max_length",
        "val_fraction",
        "eval_every",
        "optimizer",
        "quantize",
        "seed",
    )

    def inputs(self) -> list:
        return [getattr(self, f) for f in self.FIELDS]


def spec_fields(form: SettingsForm, values) -> dict:
    """TrainSpec fields from the controls' values (in `form.inputs()` order)."""
    fields = dict(zip(form.FIELDS, values, strict=True))
    if fields.get("quantize") == "none":
        fields["quantize"] = None
    for key in ("steps", "batch_size", "max_length", "eval_every", "seed"):
        if fields.get(key) is not None:
            fields[key] = int(fields[key])
    if fields.get("lr") is not None:
        fields["lr"] = float(fields["lr"])
    if fields.get("val_fraction") == "auto":
        fields["val_fraction"] = None
    return fields


def _preset_updates(preset: str):
    values = presets().get(preset, {})
    return tuple(
        gr.update(value=values[key]) if values.get(key) is not None else gr.update()
        for key in ("steps", "lr", "batch_size", "max_length", "eval_every", "optimizer")
    )


def _advanced(start: dict) -> dict:
    """The advanced controls, filled from the preset `start`; name -> component."""
    c = {}
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
        with gr.Row():
            c["steps"] = gr.Slider(
                1,
                3000,
                value=start.get("steps", 100),
                step=1,
                label="Training steps",
                elem_id="steps",
            )
            c["lr"] = gr.Dropdown(
                LEARNING_RATES, value=start.get("lr", 3e-3), label="Learning rate", elem_id="lr"
            )
            c["batch_size"] = gr.Dropdown(
                BATCH_SIZES,
                value=start.get("batch_size", 8),
                label="Batch size",
                elem_id="batch-size",
            )
        with gr.Row():
            c["max_length"] = gr.Slider(
                16,
                1024,
                value=start.get("max_length", 128),
                step=16,
                label="Max tokens per example",
                elem_id="max-length",
            )
            c["val_fraction"] = gr.Dropdown(
                VAL_SHARES,
                value="auto",
                label="Validation rows (when no eval file)",
                elem_id="val-fraction",
            )
            c["eval_every"] = gr.Slider(
                0,
                500,
                value=start.get("eval_every", 50),
                step=1,
                label="Evaluate every N steps (0 = at the end)",
                elem_id="eval-every",
            )
        with gr.Row():
            c["optimizer"] = gr.Dropdown(
                OPTIMIZERS,
                value=start.get("optimizer", "adamw"),
                label="Optimizer",
                elem_id="optimizer",
            )
            c["quantize"] = gr.Dropdown(
                QUANTIZE, value="none", label="Base model precision", elem_id="quantize"
            )
            c["seed"] = gr.Slider(0, 9999, value=0, step=1, label="Seed", elem_id="seed")
    return c


def build(config: StudioConfig) -> SettingsForm:
    """Lay out the settings block; returns the form."""
    known = presets()
    default = "quick" if "quick" in known else next(iter(known))
    gr.Markdown("### 3 · Settings", elem_classes=["step-title"])
    with gr.Row():
        preset = gr.Radio(
            [(f"{name} — {PRESET_HELP.get(name, '')}".rstrip(" —"), name) for name in known],
            value=default,
            label="Preset",
            elem_id="preset",
            scale=3,
        )
        name = gr.Textbox(
            label="Adapter name (optional)",
            placeholder="e.g. sentiment-v1",
            elem_id="adapter-name",
            scale=2,
        )
    controls = _advanced(known[default])
    form = SettingsForm(preset=preset, name=name, **controls)
    preset_driven = ["steps", "lr", "batch_size", "max_length", "eval_every", "optimizer"]
    preset.change(
        _preset_updates, preset, [controls[k] for k in preset_driven], api_visibility="private"
    )
    return form
