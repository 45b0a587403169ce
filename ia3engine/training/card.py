"""The model card (README.md) written next to every trained adapter.

YAML front matter the Hub understands (library_name, base_model, tags), how to load the adapter
with PEFT and with ia3engine, the settings and the metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath

from ia3engine.training.loading import portable_base_name

_LOADERS = {
    ("encoder", "classify"): "AutoModelForSequenceClassification",
    ("causal", "classify"): "AutoModelForCausalLM",
    ("causal", "generate"): "AutoModelForCausalLM",
    ("seq2seq", "classify"): "AutoModelForSeq2SeqLM",
    ("seq2seq", "generate"): "AutoModelForSeq2SeqLM",
}
_SETTINGS = (
    "preset",
    "steps",
    "batch_size",
    "grad_accum",
    "lr",
    "head_lr",
    "optimizer",
    "warmup_ratio",
    "max_length",
    "quantize",
    "seed",
)


def model_card(info: dict) -> str:
    """Markdown with YAML front matter, from training_info.json's content."""
    spec = info.get("spec", {})
    base = portable_base_name(info.get("base_model", ""))
    task, kind = info.get("task", "classify"), info.get("kind", "encoder")
    name = spec.get("name") or "ia3-adapter"
    tags = [
        "ia3",
        "peft",
        "ia3engine",
        "text-classification" if task == "classify" else "text-generation",
    ]
    front = ["---", "library_name: peft", f"base_model: {json.dumps(base)}", "tags:"]
    front += [f"- {tag}" for tag in tags]
    front += ["---", ""]
    labels = info.get("labels") or []
    body = [
        f"# {name}",
        "",
        f"An (IA)^3 adapter for `{base}`, trained with ia3engine on `{dataset_name(spec)}` "
        f"({task}{', labels: ' + ', '.join(labels) if labels else ''}).",
        f"It scales {', '.join(_names(info.get('target_modules')))} with "
        f"{info.get('trainable_params', 0):,} trainable parameters.",
        "",
        "## Load it with PEFT",
        "",
        "```python",
        f"from transformers import {_LOADERS.get((kind, task), 'AutoModel')}",
        "from peft import PeftModel",
        "",
        f"base = {_LOADERS.get((kind, task), 'AutoModel')}.from_pretrained({base!r}"
        + (f", num_labels={len(labels)})" if kind == "encoder" else ")"),
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        "```",
        "",
        "## Load it with ia3engine",
        "",
        "```python",
        "from ia3engine.serve.predict import Predictor",
        "",
        f"p = Predictor({info.get('base_model', base)!r}, task={task!r})",
        'p.add_adapter("mine", "path/to/this/folder")',
        'print(p.predict(["your text here"], ["mine"]))',
        "```",
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    body += [f"| {key} | {spec.get(key)} |" for key in _SETTINGS if key in spec]
    body += [f"| steps run | {info.get('steps')} |", ""]
    body += ["## Metrics (validation set)", "", "| metric | before | after |", "|---|---|---|"]
    before = info.get("metrics_before") or {}
    for key, value in (info.get("metrics") or {}).items():
        body.append(f"| {key} | {_fmt(before.get(key))} | {_fmt(value)} |")
    if info.get("stopped"):
        body += ["", "Training was stopped before the last step; these are the last metrics."]
    return "\n".join(front + body) + "\n"


def dataset_name(spec: dict) -> str:
    """The training data as the card names it: a file by its name (never the folder it sat in
    on the training machine), a Hub dataset by its id."""
    data = str(spec.get("data") or "")
    if data.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", data) or Path(data).is_file():
        return PurePath(data.replace("\\", "/")).name
    return data


def _names(targets) -> list[str]:
    if targets is None:
        return ["the default modules"]
    if isinstance(targets, str):
        return [f"modules matching `{targets}`"]
    return [f"`{t}`" for t in targets]


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
