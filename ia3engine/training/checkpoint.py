"""Training checkpoints: only what training changes (vectors, head, optimizer, schedule, RNG, step).

A checkpoint is a few kilobytes; resuming from it continues bit for bit on the CPU. It holds
only tensors and plain values and is read with weights_only=True: loading one runs no code.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from ia3engine.errors import SpecError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1
# Fields that may change between a run and its resumption without changing the result. The
# data's paths may differ between machines; its content is compared through data_fingerprint.
_FREE_FIELDS = {"out_dir", "name", "device", "data", "eval_data"}


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (what weights_only may load)."""
    version, words, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(words, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, words, gauss = state["python"]
    name, keys, position, has_gauss, cached = state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate((int(version), tuple(int(w) for w in words.tolist()), gauss))
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached))
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-{rank}.pt"


def save_checkpoint(folder: str | Path, payload: dict, rank: int = 0, main: bool = True) -> Path:
    """Write atomically (temp file + rename), so a crash mid-write leaves the last one intact.

    Every process keeps its own RNG state; the main process writes the shared part.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(rng_state(), _rng_file(folder, rank))
    path = folder / CHECKPOINT_FILE
    if main:
        _atomic_save({"format": FORMAT, **payload}, path)
    return path


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(folder: str | Path | None, rank: int = 0) -> dict | None:
    """The checkpoint in `folder` (with this process's RNG state), or None when there is none."""
    if folder is None:
        return None
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    payload = _safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SpecError(
            [f"Checkpoint {path.name} has an unknown format; delete it to start training afresh."]
        )
    rng = _rng_file(Path(folder), rank)
    if not rng.is_file():
        rng = _rng_file(Path(folder), 0)
    payload["rng"] = _safe_load(rng) if rng.is_file() else None
    return payload


def _safe_load(path: Path):
    """torch.load that never unpickles objects: a planted checkpoint cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: anything not tensors and values
        raise SpecError(
            [
                f"Checkpoint file {path.name} holds something other than tensors and plain "
                "values, so it was not loaded. Submit the job again to start afresh without it."
            ]
        ) from exc


def check_same_spec(saved: dict, current: dict, folder) -> None:
    """Refuse to resume a checkpoint made for different settings: the result would be neither."""
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in _FREE_FIELDS and saved.get(key) != current.get(key)
    )
    if changed:
        raise SpecError(
            [
                f"The checkpoint in {Path(folder).name} was made with different settings "
                f"({', '.join(changed)}); resume with the same settings, or delete the "
                "checkpoint folder (or submit the job again) to start afresh."
            ]
        )
