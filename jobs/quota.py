"""How much storage one person may fill: datasets and adapters in the database, merged exports
on disk, and (counted by the studio) uploads in Gradio's cache; IA3_MAX_STORAGE_MB per person.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sqlalchemy import func, select

from ia3engine.errors import ConfigError
from jobs.db import data_dir, reading
from jobs.errors import LimitError
from jobs.models import Adapter, DatasetBlob

DEFAULT_MB = 500.0
EXPORTS_KEEP_S = 24 * 3600.0  # merged exports older than a day are removed (made again on ask)


def limit_bytes() -> int | None:
    """IA3_MAX_STORAGE_MB as bytes (default 500 MB per person); 'none' for no quota."""
    raw = (os.environ.get("IA3_MAX_STORAGE_MB") or "").strip().lower()
    if raw in ("none", "off", "unlimited"):
        return None
    try:
        megabytes = float(raw) if raw else DEFAULT_MB
    except ValueError:
        megabytes = -1.0
    if megabytes <= 0:
        raise ConfigError(
            f"IA3_MAX_STORAGE_MB={raw!r} is not a positive number; set it like "
            f"IA3_MAX_STORAGE_MB={DEFAULT_MB:.0f} or IA3_MAX_STORAGE_MB=none for no quota."
        )
    return int(megabytes * 2**20)


def export_files(adapter_id: int) -> list[Path]:
    """The merged exports written for one adapter (zips, and folders being built)."""
    return sorted((data_dir() / "exports").glob(f"adapter-{int(adapter_id)}-*"))


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:  # removed while counting
        return 0


def stored_bytes(owner: str, *, db=None) -> int:
    """Bytes kept for `owner`: their datasets and adapters, and exports of their adapters."""
    with reading(db) as conn:
        datasets = conn.scalar(
            select(func.coalesce(func.sum(DatasetBlob.size_bytes), 0)).where(
                DatasetBlob.owner == owner
            )
        )
        rows = conn.execute(
            select(Adapter.id, Adapter.size_bytes).where(Adapter.owner == owner)
        ).all()
    exports = sum(_size(p) for row in rows for p in export_files(row.id))
    return int(datasets) + sum(int(row.size_bytes or 0) for row in rows) + exports


def refusal(owner: str, adding: int, elsewhere: int = 0, *, db=None) -> str | None:
    """The message refusing `adding` more bytes for `owner`, or None when it fits.

    `elsewhere`: bytes the caller counts itself (the studio's uploads in Gradio's cache).
    """
    limit = limit_bytes()
    if limit is None:
        return None
    used = stored_bytes(owner, db=db) + int(elsewhere)
    if used + adding <= limit:
        return None
    return (
        f"Your storage is full: you use {used / 2**20:.1f} MB of your {limit / 2**20:.0f} MB "
        f"(IA3_MAX_STORAGE_MB) and this needs {adding / 2**20:.1f} MB more. Delete adapters or "
        "jobs you no longer need in the Adapters and Jobs tabs, then try again."
    )


def check(owner: str | None, adding: int, elsewhere: int = 0, *, db=None) -> None:
    """Raise LimitError when `adding` bytes would take `owner` over their quota."""
    if owner is None:  # the local user: their own machine, their own disk
        return
    message = refusal(owner, adding, elsewhere, db=db)
    if message:
        raise LimitError(message)


def sweep_exports(keep_s: float = EXPORTS_KEEP_S) -> None:
    """Remove merged exports not asked for in `keep_s` seconds."""
    cutoff = time.time() - keep_s
    for path in (data_dir() / "exports").glob("adapter-*"):
        try:
            if path.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
