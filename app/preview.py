"""What the Train tab shows before anything trains: a model's IA3 targets and a dataset's shape.

Plain functions returning plain values, shared by the page and the API endpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from app import access_mode
from app.adapter_cache import MODEL_LOCK
from app.auth import check_model_choice
from ia3engine import IA3Config, preview_targets
from ia3engine.data.dataset import inspect_dataset
from ia3engine.errors import DataError, ModelLoadError
from ia3engine.model import TASK_HEADS
from ia3engine.training.loading import BUNDLED, detect_kind, resolve_model_path

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")
_model_cache: dict[str, dict] = {}
# The heads training saves for encoder classifiers: IA3Model's for task_type SEQ_CLS.
HEAD_MODULES = list(TASK_HEADS["SEQ_CLS"])


def bundled_models() -> list[str]:
    """Model names that work offline on a fresh install."""
    return [BUNDLED]


def sample_datasets() -> dict[str, str]:
    """Sample name ('sentiment') -> training file shipped in examples/data (eval files aside)."""
    samples = {}
    for path in sorted(EXAMPLES.iterdir()) if EXAMPLES.is_dir() else []:
        if path.suffix in DATA_SUFFIXES and "_eval" not in path.stem:
            samples[path.stem.removesuffix("_train")] = str(path)
    return samples


def sample_eval_file(train_path: str) -> str | None:
    """The held-out file that goes with a sample training file, if any."""
    path = Path(train_path)
    if path.parent != EXAMPLES or "_train" not in path.name:
        return None
    candidate = path.with_name(path.name.replace("_train", "_eval"))
    return str(candidate) if candidate.exists() else None


def describe_model(model: str, task: str = "classify") -> dict:
    """Architecture, parameter count and the modules IA3 will scale for `model`."""
    name = (model or "").strip()
    if not name:
        raise ModelLoadError("No model given. Pick a bundled model, a Hub id or a local folder.")
    check_model_choice(name)  # signed-in users: no folders on the server
    key = f"{task}:{name}"
    if key not in _model_cache:
        with MODEL_LOCK:
            module, kind = model_skeleton(name, task)
        # What training will save besides the vectors: an encoder classifier's new head.
        heads = HEAD_MODULES if task == "classify" and kind == "encoder" else None
        preview = preview_targets(module, IA3Config(modules_to_save=heads))
        vectors = sum(row["params"] for row in preview.rows)
        _model_cache[key] = {
            "model": name,
            "model_type": preview.model_type,
            "kind": kind,
            "architecture": type(module).__name__,
            "total_params": int(preview.total_params),
            "trainable_params": int(preview.trainable_params),
            "head_params": int(preview.trainable_params - vectors),
            "source": preview.source,
            "targets": [dict(row) for row in preview.rows],
        }
    return _model_cache[key]


def model_skeleton(name: str, task: str):
    """The model as training will build it, on the meta device: its structure and parameter
    counts without reading (or downloading) a single weight. Returns (module, kind)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            raise ModelLoadError(
                f"Folder '{name}' holds no model config (config.json); point to a folder "
                "saved by transformers' save_pretrained."
            ) from error
        raise ModelLoadError(
            f"Could not read model '{name}': it is not a folder with a config.json here, and "
            "the Hugging Face Hub could not be asked (no network, offline mode, or a misspelt "
            "id). Check the id, give a local folder, or use 'minilm' for the bundled model."
        ) from error
    kind = detect_kind(config)
    if task == "generate" and kind == "encoder":
        raise ModelLoadError(
            f"'{name}' is an encoder ({config.model_type}); it cannot generate text. Use the "
            "classify task, or pick a causal LM (e.g. gpt2) or a seq2seq model (e.g. t5-small)."
        )
    build = {
        "encoder": AutoModelForSequenceClassification,
        "causal": AutoModelForCausalLM,
        "seq2seq": AutoModelForSeq2SeqLM,
    }[kind]
    with torch.device("meta"):
        return build.from_config(config), kind


def check_dataset_file(path: str) -> str:
    """`path` when it is a dataset file this studio reads, else a refusal naming the formats."""
    source = Path(path)
    if not source.is_file():
        raise DataError(f"The uploaded file {source.name!r} is gone; upload it again.")
    if source.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(
            f"{source.name!r} is not a dataset file this studio reads. "
            f"Upload one of: {', '.join(DATA_SUFFIXES)}."
        )
    return str(source)


def describe_dataset(
    path: str,
    text_column: str | None = None,
    label_column: str | None = None,
    task: str = "classify",
) -> dict:
    """Format, rows, columns, guessed mapping, labels and class balance of a dataset file."""
    if not path:
        raise DataError("No dataset chosen. Pick a sample or upload a CSV, TSV, JSONL or Parquet.")
    check_dataset_file(path)
    summary = inspect_dataset(
        path,
        text_column=text_column or None,
        label_column=label_column or None,
        task=task,
        max_rows=access_mode.active().limits.max_rows,  # the host's cap, applied while the file is read
    )
    return {
        "file": Path(summary.path).name,  # never the server path
        "format": summary.format,
        "n_rows": int(summary.n_rows),
        "columns": list(summary.columns),
        "text_column": summary.text_column,
        "label_column": summary.label_column,
        "labels": [str(label) for label in (summary.labels or [])],
        "class_counts": {str(k): int(v) for k, v in (summary.class_counts or {}).items()},
        "preview": [dict(row) for row in summary.preview],
        "warnings": list(summary.warnings or []),
    }
