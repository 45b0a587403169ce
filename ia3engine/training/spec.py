"""TrainSpec: everything one training run needs, as a plain JSON-friendly dataclass.

Presets fill the fields left as None; `validate()` names every bad field and its fix at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ia3engine.data.split import AUTO_VAL_FRACTION
from ia3engine.data.templates import template_names, template_problem
from ia3engine.errors import SpecError

TASKS = ("classify", "generate")
OPTIMIZERS = ("adamw", "adafactor")
QUANTIZE = (None, "8bit", "4bit")
BUNDLED_MODEL = "minilm"

# Why these numbers: docs/training.md (measured on the bundled MiniLM and on principle).
PRESETS: dict[str, dict[str, Any]] = {
    # Few hundred rows on a laptop CPU in about a minute.
    "quick": {
        "steps": 120,
        "lr": 1e-2,
        "head_lr": 3e-2,
        "batch_size": 16,
        "optimizer": "adamw",
        "warmup_ratio": 0.06,
        "max_length": 256,  # as far as the bundled MiniLM (and SetFit with it) reads a text
        "eval_every": 20,
        "early_stopping_patience": 0,
        "max_epochs": 60,
        "pair_weight": 1.0,
        "label_rows": True,
    },
    # The T-Few paper: 1000 steps, batch 8, Adafactor at 3e-3, 6% warm-up, 256 tokens.
    "tfew": {
        "steps": 1000,
        "lr": 3e-3,
        "head_lr": 3e-3,
        "batch_size": 8,
        "optimizer": "adafactor",
        "warmup_ratio": 0.06,
        "max_length": 256,
        "eval_every": 100,
        "early_stopping_patience": 0,
        "pair_weight": 0.0,
        "label_rows": False,
    },
}

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_DATA_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".pq"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class TrainSpec:
    """One training run. Fields left as None take the preset's value (see `resolved()`)."""

    model: str = BUNDLED_MODEL  # Hub id, local folder, or "minilm" (the bundled offline MiniLM)
    data: str = ""  # training file (CSV, TSV, JSON, JSONL, Parquet, text) or a Hub dataset id
    eval_data: str | None = None  # held-out file; None = split val_fraction off the training rows
    task: str = "classify"  # "classify" (text -> label) or "generate" (prompt -> response)
    text_column: str | None = None  # input column; None = guessed from the file
    label_column: str | None = (
        None  # label (classify) or response (generate) column; None = guessed
    )
    template: str | None = None  # prompt with {column} slots, e.g. "Review: {text}"; None = default
    preset: str = "quick"  # "quick" (CPU, about a minute) or "tfew" (the paper's settings)
    steps: int | None = None  # optimizer steps
    lr: float | None = None  # learning rate of the IA3 vectors
    head_lr: float | None = None  # learning rate of a new classification head (encoders)
    batch_size: int | None = None  # examples per step, summed over all processes
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size each)
    optimizer: str | None = None  # "adamw" or "adafactor"
    warmup_ratio: float | None = None  # share of steps with a linear warm-up, then linear decay
    max_length: int | None = None  # tokens per input; longer inputs are truncated
    eval_every: int | None = None  # steps between evaluations (0 = only at the end)
    early_stopping_patience: int | None = None  # evaluations without improvement; 0 = never stop
    max_epochs: float | None = None  # passes over the rows; stops before `steps` on tiny data
    pair_weight: float | None = None  # SetFit's pair objective beside cross-entropy (encoders)
    label_rows: bool | None = None  # encoders: each label's name also trains as a row of its class
    quantize: str | None = None  # None, "8bit" or "4bit" base weights (bitsandbytes)
    seed: int = 0  # seed for the split, the head, the data order and dropout
    max_rows: int | None = None  # cap on training rows; None = the data module's default cap
    # share held out for validation when eval_data is None; None = by the row count: 10% from
    # 500 rows up, below that every row trains (ia3engine/data/split.py, auto_val_fraction)
    val_fraction: float | None = None
    out_dir: str | None = None  # adapter folder; None = ./ia3-adapters/<name>
    target_modules: list[str] | None = None  # modules to scale; None = the architecture's default
    feedforward_modules: list[str] | None = None  # targets whose input is scaled; None = default
    device: str | None = None  # "cuda:1", "cpu", "mps"; None = the best available
    name: str | None = None  # adapter name; None = derived from the data file and the model

    def __post_init__(self) -> None:
        # A pathlib.Path is a natural thing to pass from Python; the spec keeps plain text.
        for key in ("model", "data", "eval_data", "out_dir"):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                setattr(self, key, os.fspath(value))

    # --- presets -----------------------------------------------------------------------------
    def resolved(self) -> TrainSpec:
        """A copy with every preset-controlled field filled, plus a name and an output folder."""
        values = dataclasses.asdict(self)
        preset = PRESETS.get(self.preset, PRESETS["quick"])
        for key, value in preset.items():
            if values[key] is None:
                values[key] = value
        if not values["name"]:
            values["name"] = default_name(self.data, self.model)
        if not values["out_dir"]:
            values["out_dir"] = str(Path("ia3-adapters") / values["name"])
        return TrainSpec(**values)

    def steps_for(self, n_rows: int) -> int:
        """`steps`, or fewer when `max_epochs` passes over `n_rows` training rows end sooner:
        on a few dozen rows the preset's steps would be a hundred passes, which only makes the
        head more confident (measured in docs/training.md), and cost time."""
        if not self.max_epochs or n_rows < 1:
            return self.steps
        passes = math.ceil(self.max_epochs * n_rows / max(1, self.batch_size * self.grad_accum))
        return max(1, min(self.steps, passes))

    # --- validation ---------------------------------------------------------------------------
    def data_options(self) -> dict:
        """The keyword arguments of `ia3engine.data.dataset.prepare_dataset` for this spec's data:
        `prepare_dataset(**spec.data_options())` reads, maps and splits it."""
        options = {
            "path": self.data,
            "eval_path": self.eval_data,
            "task": self.task,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "template": self.template,
            "val_fraction": self._val_share(),
            "seed": self.seed,
        }
        if self.max_rows:
            options["max_rows"] = self.max_rows
        return options

    def _val_share(self) -> float | None:
        """The share to hold back; early stopping needs validation rows however few there are."""
        patience = self.resolved().early_stopping_patience if self.val_fraction is None else 0
        return AUTO_VAL_FRACTION if patience and self.eval_data is None else self.val_fraction

    def validate(self) -> TrainSpec:
        """Raise SpecError listing every problem; return self when the spec is usable."""
        problems = _check_choices(self) + _check_numbers(self) + _check_paths(self)
        if problems:
            raise SpecError(problems)
        return self

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        if not isinstance(data, dict):
            raise SpecError([f"A training spec must be a JSON object, got {type(data).__name__}."])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                [
                    f"Unknown spec field '{key}'; remove it. Known fields: {', '.join(sorted(known))}."
                    for key in unknown
                ]
            )
        return cls(**data)


def default_name(data: str, model: str) -> str:
    """A readable adapter name such as 'sentiment_train-minilm'."""
    stem = Path(str(data)).stem or "adapter"
    base = str(model).rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^\w.-]+", "-", f"{stem}-{base}")[:80]


def _check_choices(spec: TrainSpec) -> list[str]:
    problems = []
    if spec.task not in TASKS:
        problems.append(f"task '{spec.task}' is unknown; use one of: {', '.join(TASKS)}.")
    if spec.preset not in PRESETS:
        problems.append(f"preset '{spec.preset}' is unknown; use one of: {', '.join(PRESETS)}.")
    if spec.optimizer is not None and spec.optimizer not in OPTIMIZERS:
        problems.append(
            f"optimizer '{spec.optimizer}' is unknown; use one of: {', '.join(OPTIMIZERS)}."
        )
    if spec.quantize not in QUANTIZE:
        problems.append(f"quantize '{spec.quantize}' is unknown; use 8bit, 4bit or leave it empty.")
    if spec.device is not None and not _DEVICE.match(str(spec.device)):
        problems.append(
            f"device '{spec.device}' is not a device; use cpu, mps, cuda or cuda:N (e.g. cuda:1), "
            "or leave it empty to pick the best one."
        )
    for key in ("target_modules", "feedforward_modules"):
        value = getattr(spec, key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)
        ):
            problems.append(f"{key} must be a list of module names such as ['key', 'value'].")
    if spec.template is not None:
        problem = template_problem(spec.template)
        if problem:
            problems.append(problem)
        elif not template_names(spec.template):
            problems.append(
                "template uses no column; put column names in braces, e.g. "
                "'Review: {text}\\nAnswer:'."
            )
    return problems + _check_texts(spec)


# Text fields and how long each may be: names and modules are short; a longer value is a
# mistake or an attempt to make every log line and table row huge.
_TEXT_LIMITS = {
    "model": 500,
    "data": 1000,
    "eval_data": 1000,
    "text_column": 200,
    "label_column": 200,
    "name": 200,
    "out_dir": 1000,
    "device": 20,
}
MAX_MODULE_NAMES = 200


def _check_texts(spec: TrainSpec) -> list[str]:
    problems = []
    for key, most in _TEXT_LIMITS.items():
        value = getattr(spec, key)
        if value is not None and not isinstance(value, str):
            problems.append(f"{key} must be text, not {type(value).__name__}.")
        elif value is not None and len(value) > most:
            problems.append(f"{key} has {len(value):,} characters; at most {most} are allowed.")
    for key in ("target_modules", "feedforward_modules"):
        value = getattr(spec, key)
        if isinstance(value, list) and (
            len(value) > MAX_MODULE_NAMES or any(len(str(v)) > 200 for v in value)
        ):
            problems.append(
                f"{key} lists {len(value)} names; give at most {MAX_MODULE_NAMES} module names "
                "of at most 200 characters each."
            )
    return problems


# field -> (lowest, highest, how to say it). The highest values are sanity bounds for any host
# (a host sets tighter ones with IA3_MAX_*): far beyond what IA3 needs, short of what would
# exhaust a machine's memory before the first step (a batch of 10^7 rows, 10^6 micro-batches).
BOUNDS = {
    "steps": (1, 1_000_000, "a whole number from 1 to 1,000,000"),
    "batch_size": (1, 4096, "a whole number from 1 to 4,096 (examples per step)"),
    "grad_accum": (1, 1024, "a whole number from 1 to 1,024 (micro-batches per step)"),
    "max_length": (8, 32_768, "a whole number of tokens from 8 to 32,768"),
    "eval_every": (0, 1_000_000, "a whole number from 0 to 1,000,000 (0 = only at the end)"),
    "early_stopping_patience": (
        0,
        10_000,
        "a whole number from 0 to 10,000 (0 = never stop early)",
    ),
    "seed": (0, 2**32 - 1, "a whole number from 0 to 4,294,967,295"),
    "max_rows": (1, 10_000_000, "a whole number from 1 to 10,000,000"),
}


def _check_numbers(spec: TrainSpec) -> list[str]:
    problems = []
    for key, (low, high, says) in BOUNDS.items():
        value = getattr(spec, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            shown = (
                f"{value:,}"
                if isinstance(value, int) and not isinstance(value, bool)
                else repr(value)
            )
            problems.append(f"{key} is {shown[:40]}; it must be {says}.")
    for key in ("lr", "head_lr"):
        value = getattr(spec, key)
        if value is not None and (not _is_number(value) or not 0 < value <= 1):
            problems.append(
                f"{key} is {value!r}; use a learning rate above 0 and at most 1 (e.g. 3e-3)."
            )
    if spec.max_epochs is not None and not (
        _is_number(spec.max_epochs) and 0 < spec.max_epochs <= 100_000
    ):
        problems.append(
            f"max_epochs is {spec.max_epochs!r}; use a number of passes above 0 (e.g. 20), "
            "or unset for no cap."
        )
    if spec.pair_weight is not None and not (
        _is_number(spec.pair_weight) and 0 <= spec.pair_weight <= 100
    ):
        problems.append(
            f"pair_weight is {spec.pair_weight!r}; use a weight from 0 (off) to 100 (e.g. 1)."
        )
    if spec.label_rows is not None and not isinstance(spec.label_rows, bool):
        problems.append(
            f"label_rows is {spec.label_rows!r}; use true (each label's name also trains as a "
            "row of its class), false, or leave it unset for the preset's choice."
        )
    if spec.warmup_ratio is not None and (
        not _is_number(spec.warmup_ratio) or not 0 <= spec.warmup_ratio < 1
    ):
        problems.append(
            f"warmup_ratio is {spec.warmup_ratio!r}; use a share from 0 up to 1 (e.g. 0.06)."
        )
    if spec.val_fraction is not None and (
        not _is_number(spec.val_fraction) or not 0 <= spec.val_fraction <= 0.5
    ):
        problems.append(
            f"val_fraction is {spec.val_fraction!r}; use a share from 0 to 0.5 (e.g. 0.1), or "
            "leave it unset to hold back 10% only when that is at least 50 rows."
        )
    if spec.val_fraction == 0 and spec.eval_data is None and spec.early_stopping_patience:
        problems.append(
            "early_stopping_patience needs validation rows, but val_fraction is 0 and there is "
            "no eval file; give an eval file, set a validation share, or set the patience to 0."
        )
    return problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_paths(spec: TrainSpec) -> list[str]:
    problems = []
    model = str(spec.model or "").strip()
    if not model:
        problems.append(
            "model is empty; give a Hub id (e.g. bert-base-uncased), a folder, or 'minilm'."
        )
    elif model != BUNDLED_MODEL and _looks_local(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            problems.append(
                f"model folder '{model}' does not exist; check the path, or give a Hub id or 'minilm'."
            )
        elif not (folder / "config.json").is_file():
            problems.append(
                f"model folder '{model}' has no config.json; point to a folder saved by "
                "transformers' save_pretrained."
            )
    for key in ("data", "eval_data"):
        value = getattr(spec, key)
        if value is None and key == "eval_data":
            continue
        problems += _check_data_path(key, str(value or "").strip())
    return problems


def _check_data_path(key: str, value: str) -> list[str]:
    if not value:
        return [f"{key} is empty; give a dataset file (CSV, TSV, JSON, JSONL, Parquet or text)."]
    path = Path(value).expanduser()
    if path.exists():
        return [] if path.is_file() else [f"{key} '{value}' is a folder; give a file inside it."]
    if path.suffix.lower() in _DATA_SUFFIXES or _looks_local(value) or not _HUB_ID.match(value):
        return [f"{key} file '{value}' does not exist; check the path."]
    return []  # a Hub dataset id: the data module loads it when online


def _looks_local(value: str) -> bool:
    return (
        value.startswith(("/", ".", "~"))
        or value.count("/") > 1
        or "\\" in value
        or Path(value).expanduser().exists()
    )
