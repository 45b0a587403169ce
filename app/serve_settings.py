"""The serving settings (IA3_SERVE_*): the scheduler's batches and queue, the adapter cache's
and the bases' memory, and one request's bounds. docs/serving.md explains each one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ia3engine.errors import ConfigError

# field -> (environment variable, default, kind, what it is)
_SETTINGS = {
    "max_batch_rows": ("IA3_SERVE_MAX_BATCH_ROWS", 32, int, "rows in one forward"),
    "max_delay_ms": ("IA3_SERVE_MAX_DELAY_MS", 5.0, float, "ms a request waits for company"),
    "max_queued_rows": ("IA3_SERVE_MAX_QUEUED_ROWS", 1024, int, "rows waiting per base"),
    "cache_mb": ("IA3_SERVE_CACHE_MB", 256.0, float, "MB of adapters kept per base"),
    "bases_mb": ("IA3_SERVE_BASES_MB", 8192.0, float, "MB of base models kept loaded"),
    "max_bases": ("IA3_SERVE_MAX_BASES", 2, int, "base models kept loaded"),
    "max_texts": ("IA3_SERVE_MAX_TEXTS", 64, int, "texts in one classify request"),
    "max_rows_per_user": ("IA3_SERVE_MAX_ROWS_PER_USER", 256, int, "rows one person has queued"),
}


@dataclass(frozen=True)
class ServeSettings:
    max_batch_rows: int = 32
    max_delay_ms: float = 5.0
    max_queued_rows: int = 1024
    cache_mb: float = 256.0
    bases_mb: float = 8192.0
    max_bases: int = 2
    max_texts: int = 64
    max_rows_per_user: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        """Read IA3_SERVE_*; unset or empty means the default; the rest must be > 0 (the delay
        may be 0)."""
        env = os.environ if env is None else env
        values = {}
        for field, (variable, default, kind, unit) in _SETTINGS.items():
            raw = (env.get(variable) or "").strip()
            values[field] = default if not raw else _parse(variable, raw, kind, unit, default)
        for bound in ("max_queued_rows", "max_rows_per_user"):
            if values["max_texts"] > values[bound]:
                raise ConfigError(
                    f"IA3_SERVE_MAX_TEXTS={values['max_texts']} is more than "
                    f"{_SETTINGS[bound][0]}={values[bound]}: such a request could never be "
                    "queued. Lower the first or raise the second."
                )
        return cls(**values)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * 2**20)

    @property
    def bases_bytes(self) -> int:
        return int(self.bases_mb * 2**20)


def _parse(variable: str, raw: str, kind, unit: str, default):
    try:
        number = float(raw)
        value = kind(number) if kind is float or number.is_integer() else None
    except (ValueError, OverflowError):
        value = None
    zero_ok = variable == "IA3_SERVE_MAX_DELAY_MS"  # 0: never wait for other requests
    if value is None or value < 0 or (value == 0 and not zero_ok):
        wanted = "number" if kind is float else "whole number"
        raise ConfigError(
            f"{variable}={raw!r} is not a {'' if zero_ok else 'positive '}{wanted} ({unit}); "
            f"set it like {variable}={default}."
        )
    return value
