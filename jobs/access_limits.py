"""What a host allows one request to cost, and which files a signed-in user's job may name.

Limits come from IA3_MAX_* variables; paths must stay inside the data directory's uploads or
the shipped examples, and models must be Hub ids or the bundled one, for every signed-in user.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from ia3engine.errors import ConfigError
from ia3engine.hub_files import hub_json
from jobs.db import data_dir, reading
from jobs.errors import AccessDeniedError, LimitError
from jobs.models import Job
from jobs.status import ACTIVE, Status

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
BUNDLED_MODELS = ("minilm",)
# A Hub id: "name" or "owner/name"; nothing that could be read as a path on this machine.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_NO_LIMIT = ("none", "off", "unlimited")

# name -> (environment variable, default, unit shown in messages)
_SETTINGS = {
    "max_upload_mb": ("IA3_MAX_UPLOAD_MB", 100.0, "MB"),
    "max_rows": ("IA3_MAX_ROWS", 100_000, "rows"),
    "max_steps": ("IA3_MAX_STEPS", 10_000, "steps"),
    "max_jobs_per_user": ("IA3_MAX_JOBS_PER_USER", 3, "jobs"),
    "max_queued": ("IA3_MAX_QUEUED", 100, "jobs"),
    "max_examples": ("IA3_MAX_EXAMPLES", 1_000_000, "examples"),
    "max_batch_tokens": ("IA3_MAX_BATCH_TOKENS", 65_536, "tokens per micro-batch"),
    "max_model_params": ("IA3_MAX_MODEL_PARAMS", 3_000_000_000, "parameters"),
    "max_model_gb": ("IA3_MAX_MODEL_GB", 16.0, "GB"),
    "max_predicts_per_user": ("IA3_MAX_PREDICTS_PER_USER", 2, "playground requests"),
}
_SETTINGS_DEFAULTS = {variable: default for variable, default, _ in _SETTINGS.values()}


@dataclass(frozen=True)
class Limits:
    """The host's limits; None means no limit."""

    max_upload_mb: float | None = 100.0  # one uploaded file (dataset or adapter zip)
    max_rows: int | None = 100_000  # rows of one training file
    max_steps: int | None = 10_000  # optimizer steps of one job
    max_jobs_per_user: int | None = 3  # queued + running jobs of one signed-in user
    max_queued: int | None = 100  # queued jobs of everyone together
    max_examples: int | None = 1_000_000  # steps x batch_size x grad_accum of one job
    max_batch_tokens: int | None = 65_536  # batch_size x max_length: one micro-batch's memory
    max_model_params: int | None = 3_000_000_000  # a base model's parameters, from its config
    max_model_gb: float | None = 16.0  # a base model's weights on disk (or estimated)
    max_predicts_per_user: int | None = 2  # one person's playground calls running or waiting

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, defaults: bool = True) -> Limits:
        """Read IA3_MAX_*; 'none' means no limit; unset means the default, or no limit when
        `defaults` is False (the local single user, whom only a host's explicit limit binds)."""
        env = os.environ if env is None else env
        values = {}
        for field, (variable, default, _) in _SETTINGS.items():
            values[field] = _parse(variable, env.get(variable), default if defaults else None)
        return cls(**values)


NO_LIMITS = Limits(**{field: None for field in _SETTINGS})


def _parse(variable: str, raw: str | None, default):
    if raw is None or not raw.strip():
        return default
    if raw.strip().lower() in _NO_LIMIT:
        return None
    kind = type(_SETTINGS_DEFAULTS[variable])
    try:
        value = float(raw.strip())
        # Whole-number limits may be written 3e9; 2.5 jobs is still refused.
        value = (
            int(value) if kind is int and value.is_integer() else value if kind is float else None
        )
    except (ValueError, OverflowError):
        value = None
    if value is None or value <= 0:
        raise ConfigError(
            f"{variable}={raw!r} is not a positive {'number' if kind is float else 'whole number'}"
            f"; set it like {variable}={_SETTINGS_DEFAULTS[variable]} or {variable}=none for no "
            "limit."
        )
    return value


def over(limit_name: str, value, limits: Limits) -> str | None:
    """The refusal for `value` over a limit, or None when it fits."""
    limit = getattr(limits, limit_name)
    if limit is None or value <= limit:
        return None
    variable, _, unit = _SETTINGS[limit_name]
    shown = f"{value:.1f}" if isinstance(value, float) else f"{value:,}"
    return f"{shown} {unit} is over this studio's limit of {limit:,} {unit} ({variable})."


def check_file_size(path: str | Path, limits: Limits) -> None:
    """Refuse a file larger than the upload limit."""
    path = Path(path)
    if not path.is_file():
        return
    problem = over("max_upload_mb", path.stat().st_size / 2**20, limits)
    if problem:
        raise LimitError(f"'{path.name}' is too large: {problem} Upload a smaller file.")


def check_steps(spec: dict, limits: Limits) -> None:
    steps = spec.get("steps")
    problem = over("max_steps", int(steps), limits) if steps else None
    if problem:
        raise LimitError(f"Training steps: {problem} Choose fewer steps.")


def check_work(spec: dict, limits: Limits) -> None:
    """Refuse a job whose total work or per-step memory is over the host's limits.

    `spec` is resolved (preset values filled): steps alone would let batch_size 4096 with
    grad_accum 1024 through a step limit, so the examples processed are what count.
    """
    steps, batch = int(spec.get("steps") or 0), int(spec.get("batch_size") or 0)
    examples = steps * batch * int(spec.get("grad_accum") or 1)
    problem = over("max_examples", examples, limits)
    if problem:
        raise LimitError(
            f"This job would process {steps:,} steps x {batch:,} examples x "
            f"{int(spec.get('grad_accum') or 1):,} micro-batches: {problem} Lower steps, "
            "batch_size or grad_accum."
        )
    tokens = batch * int(spec.get("max_length") or 0)
    problem = over("max_batch_tokens", tokens, limits)
    if problem:
        raise LimitError(
            f"batch_size {batch:,} x max_length {int(spec.get('max_length') or 0):,}: {problem} "
            "Lower the batch size or max length (grad_accum keeps the effective batch)."
        )


def capped_rows(spec: dict, limits: Limits) -> dict:
    """The spec with max_rows no higher than the host's limit (bigger files are then refused)."""
    if limits.max_rows is None:
        return spec
    asked = spec.get("max_rows")
    return {**spec, "max_rows": min(int(asked), limits.max_rows) if asked else limits.max_rows}


def check_queue_room(owner: str | None, limits: Limits, *, db=None, conn=None) -> None:
    """Refuse when the queue is full, or when `owner` already has their share of jobs.

    With `conn` (the transaction that will add the job) the count binds; without, it is
    only an early answer, since another request may add a job right after it.
    """
    if conn is None:
        with reading(db) as conn:
            return check_queue_room(owner, limits, conn=conn)
    queued = conn.scalar(select(func.count()).select_from(Job).where(Job.status == Status.QUEUED))
    mine = 0
    if owner is not None:
        mine = conn.scalar(
            select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(ACTIVE))
        )
    if owner is not None and limits.max_jobs_per_user is not None:
        if mine >= limits.max_jobs_per_user:
            raise LimitError(
                f"You already have {mine} jobs queued or running, the most this studio allows "
                f"per person (IA3_MAX_JOBS_PER_USER={limits.max_jobs_per_user}). Wait for one "
                "to finish or cancel one, then queue again."
            )
    if limits.max_queued is not None and queued >= limits.max_queued:
        raise LimitError(
            f"The queue is full: {queued} jobs are waiting (IA3_MAX_QUEUED="
            f"{limits.max_queued}). Try again when some have started."
        )


# Paths and models a signed-in user may name -------------------------------------------------


def data_roots() -> list[Path]:
    """Where a signed-in user's training files may live: uploads and the shipped samples."""
    return [(data_dir() / "uploads").resolve(), EXAMPLES.resolve()]


def check_data_path(field: str, value: str) -> None:
    """A dataset path must be an uploaded file or a sample; a Hub dataset id is fine too."""
    text = str(value or "").strip()
    if not text:
        return
    path = Path(text).expanduser()
    if path.exists() or not _HUB_ID.match(text):
        resolved = path.resolve()  # follows symlinks, so a link out of uploads is caught
        if not any(resolved.is_relative_to(root) for root in data_roots()):
            raise AccessDeniedError(
                f"{field}: '{path.name}' is not a file you uploaded. Upload the dataset in the "
                "Train tab (or pick a sample); files elsewhere on the server cannot be used."
            )


def check_model(value: str, limits: Limits | None = None) -> None:
    """A signed-in user names a Hub model id or a bundled model, never a folder on the server,
    and no model larger than the host allows (`limits`, default: the environment's)."""
    text = str(value or "").strip()
    if text in BUNDLED_MODELS:
        return
    if not _HUB_ID.match(text) or Path(text).expanduser().exists() or ".." in text:
        raise AccessDeniedError(
            f"Model '{text}' looks like a folder on the server; this studio only loads Hub "
            f"model ids (like 'distilbert-base-uncased') or the bundled {BUNDLED_MODELS[0]!r}."
        )
    check_model_size(text, limits or Limits.from_env())


# Model size, from the Hub's small metadata files only: never a weight --------------------------

_HIDDEN = ("hidden_size", "d_model", "n_embd", "dim", "model_dim", "embed_dim")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_EXTRA_LAYERS = ("num_decoder_layers",)  # seq2seq: the decoder's own stack
_FEEDFORWARD = ("intermediate_size", "n_inner", "d_ff", "ffn_dim", "ffn_hidden_size")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_VOCAB = ("vocab_size", "padded_vocab_size")
_DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1}
_MAX_SIZES_KEPT = 256
_sizes: dict[str, tuple[int, float] | None] = {}


def _first_number(config: dict, keys) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def estimate_params(config: dict) -> int:
    """A lower estimate of a transformer's parameters from its config.json: embeddings plus,
    per layer, attention (4 h^2) and a feedforward of two matrices (times its experts).

    Nested configs (a multimodal model's text_config) count too; unknown shapes count 0.
    """
    hidden = _first_number(config, _HIDDEN)
    layers = _first_number(config, _LAYERS) + _first_number(config, _EXTRA_LAYERS)
    feedforward = _first_number(config, _FEEDFORWARD) or 4 * hidden
    experts = _first_number(config, _EXPERTS) or 1
    total = _first_number(config, _VOCAB) * hidden
    total += layers * (4 * hidden * hidden + 2 * hidden * feedforward * experts)
    for value in config.values():
        if isinstance(value, dict) and value is not config:
            total += estimate_params(value)
    return total


def model_size(model: str) -> tuple[int, float] | None:
    """(parameters, GB of weights) of a Hub model from its config.json and, when there is one,
    its safetensors index; None when its config cannot be read (the job fails later anyway)."""
    if model in _sizes:
        return _sizes[model]
    config = hub_json(model, "config.json")
    size = None
    if config is not None:
        params = estimate_params(config)
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
        index = hub_json(model, "model.safetensors.index.json") or {}
        total = (index.get("metadata") or {}).get("total_size")
        if isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0:
            gb = float(total) / 1e9
        else:
            gb = params * _DTYPE_BYTES.get(dtype, 2) / 1e9
        size = (params, gb)
    if len(_sizes) >= _MAX_SIZES_KEPT:
        _sizes.clear()
    _sizes[model] = size
    return size


def check_model_size(model: str, limits: Limits) -> None:
    """Refuse a Hub model that its own metadata says is larger than the host allows."""
    if limits.max_model_params is None and limits.max_model_gb is None:
        return
    size = model_size(model)
    if size is None:
        log.info("model %s: no config to judge its size by; the load will tell", model)
        return
    params, gb = size
    problem = over("max_model_params", params, limits) or over("max_model_gb", gb, limits)
    if problem:
        raise LimitError(
            f"Model '{model}' is too large for this studio: by its config it has about "
            f"{params:,} parameters and {gb:.1f} GB of weights; {problem} Pick a smaller model."
        )
