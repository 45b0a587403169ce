"""The model card (README.md) written next to every trained adapter.

YAML front matter the Hub understands (library_name, base_model, tags, pipeline_tag and the
validation metrics as a model-index), how to load the adapter with PEFT and with ia3engine, the
settings and the metrics. with_hub_metadata() gives a card made elsewhere the same front matter.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePath

import yaml

from ia3engine.training.loading import portable_base_name

_LOADERS = {
    ("encoder", "classify"): "AutoModelForSequenceClassification",
    ("causal", "classify"): "AutoModelForCausalLM",
    ("causal", "generate"): "AutoModelForCausalLM",
    ("seq2seq", "classify"): "AutoModelForSeq2SeqLM",
    ("seq2seq", "generate"): "AutoModelForSeq2SeqLM",
}
# The Hub's pipeline tag for what the adapter does (its widget and search filters).
_PIPELINES = {
    ("encoder", "classify"): "text-classification",
    ("causal", "classify"): "text-classification",
    ("seq2seq", "classify"): "text-classification",
    ("causal", "generate"): "text-generation",
    ("seq2seq", "generate"): "text2text-generation",
}
_TASK_NAMES = {
    "text-classification": "Text Classification",
    "text-generation": "Text Generation",
    "text2text-generation": "Text2Text Generation",
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
    front = front_matter(hub_metadata(info)) + "\n"
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
    return front + "\n".join(body) + "\n"


def hub_metadata(info: dict) -> dict:
    """The card's front matter, from training_info.json's content (or what an imported adapter
    has: its base model and task): library_name, base_model, tags, pipeline_tag, model-index."""
    spec = info.get("spec") or {}
    base = portable_base_name(info.get("base_model") or "")
    task, kind = info.get("task") or "classify", info.get("kind") or "encoder"
    pipeline = _PIPELINES.get((kind, task))
    meta: dict = {"library_name": "peft"}
    if base:
        meta["base_model"] = base
    meta["tags"] = ["ia3", "peft", "ia3engine"] + ([pipeline] if pipeline else [])
    if pipeline:
        meta["pipeline_tag"] = pipeline
    metrics = {
        str(key): float(f"{value:.6g}") if isinstance(value, float) else value
        for key, value in (info.get("metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    if metrics and pipeline:
        data = dataset_name(spec) or "validation data"
        meta["model-index"] = [
            {
                "name": str(spec.get("name") or info.get("name") or "ia3-adapter"),
                "results": [
                    {
                        "task": {"type": pipeline, "name": _TASK_NAMES[pipeline]},
                        "dataset": {"type": data, "name": data, "split": "validation"},
                        "metrics": [
                            {"type": key, "value": value, "name": key}
                            for key, value in metrics.items()
                        ],
                    }
                ],
            }
        ]
    return meta


def front_matter(meta: dict) -> str:
    """`meta` as the YAML block between --- lines that opens a Hub model card."""
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{text}---\n"


def split_card(card: str) -> tuple[dict, str]:
    """A card's front matter (empty when it has none, or none that parses as a mapping) and
    the Markdown after it."""
    match = re.match(r"\A---\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", card or "", re.DOTALL)
    if not match:
        return {}, card or ""
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        meta = None
    return (meta if isinstance(meta, dict) else {}), card[match.end() :]


def with_hub_metadata(card: str, meta: dict) -> str:
    """`card` with `meta` merged into its front matter (tags joined, other keys replaced)."""
    old, body = split_card(card)
    tags = [str(t) for t in (old.get("tags") or []) if isinstance(t, str | int | float)]
    merged = {**old, **meta}
    merged["tags"] = list(dict.fromkeys([*(meta.get("tags") or []), *tags]))
    merged = {"library_name": merged.pop("library_name", "peft"), **merged}
    return front_matter(merged) + "\n" + body.lstrip("\r\n")


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
