"""How long one job may run: IA3_MAX_JOB_MINUTES, read when a job is queued.

The limit is stored in the job's row, so every worker (embedded or on another machine)
applies the limit of the studio that queued the job, not a setting of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ia3engine.errors import ConfigError

VARIABLE = "IA3_MAX_JOB_MINUTES"
DEFAULT_MINUTES = 120.0  # for signed-in users; the local single user has none unless set
_NO_LIMIT = ("none", "off", "unlimited")


def job_seconds(env: Mapping[str, str] | None = None, *, defaults: bool = True) -> float | None:
    """Seconds one attempt of a job may run, or None for no limit; fractions of a minute are
    fine (0.5 = 30 s). Unset: the default, or no limit when `defaults` is False."""
    env = os.environ if env is None else env
    raw = (env.get(VARIABLE) or "").strip()
    if not raw:
        return DEFAULT_MINUTES * 60 if defaults else None
    if raw.lower() in _NO_LIMIT:
        return None
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0 or minutes == float("inf"):
        raise ConfigError(
            f"{VARIABLE}={raw!r} is not a positive number of minutes; set it like "
            f"{VARIABLE}={DEFAULT_MINUTES:g} or {VARIABLE}=none for no limit."
        )
    return minutes * 60


def over_time_message(job_id: int, seconds: float, step: int | None, steps: int | None) -> str:
    """What a person reads when their job ran past the limit: the limit, then the fix."""
    where = f" at step {step} of {steps}" if step is not None and steps else ""
    return (
        f"The job ran longer than this studio allows ({_shown(seconds)}, {VARIABLE}) and was "
        f"stopped{where}. Choose fewer steps, a smaller max length or a smaller model, and "
        f"submit it again (`ia3 jobs retry {job_id}` would resume it for another "
        f"{_shown(seconds)})."
    )


def _shown(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"
