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

from ia3engine.errors import AccessDeniedError, ConfigError, LimitError
from jobs.db import data_dir, reading
from jobs.models import Job, Status

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, defaults: bool = True) -> Limits:
        """Read IA3_MAX_*; 'none' means no limit; unset means the default, or no limit when
        `defaults` is False (the local single user, whom only a host's explicit limit binds)."""
        env = os.environ if env is None else env
        values = {}
        for field, (variable, default, _) in _SETTINGS.items():
            values[field] = _parse(variable, env.get(variable), default if defaults else None)
        return cls(**values)


NO_LIMITS = Limits(None, None, None, None, None)


def _parse(variable: str, raw: str | None, default):
    if raw is None or not raw.strip():
        return default
    if raw.strip().lower() in _NO_LIMIT:
        return None
    kind = type(_SETTINGS_DEFAULTS[variable])
    try:
        value = kind(raw.strip())
    except ValueError:
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
    active = [Status.QUEUED.value, Status.RUNNING.value]
    queued = conn.scalar(
        select(func.count()).select_from(Job).where(Job.status == Status.QUEUED.value)
    )
    mine = 0
    if owner is not None:
        mine = conn.scalar(
            select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(active))
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


def check_model(value: str) -> None:
    """A signed-in user names a Hub model id or a bundled model, never a folder on the server."""
    text = str(value or "").strip()
    if text in BUNDLED_MODELS:
        return
    if not _HUB_ID.match(text) or Path(text).expanduser().exists() or ".." in text:
        raise AccessDeniedError(
            f"Model '{text}' looks like a folder on the server; this studio only loads Hub "
            f"model ids (like 'distilbert-base-uncased') or the bundled {BUNDLED_MODELS[0]!r}."
        )
