"""The studio's start-up choices: preselected model and sample, data directory, worker count.

Filled by `ia3 studio` from its flags; the tabs read it to set their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _default_data_dir() -> Path:
    return Path(os.environ.get("IA3_DATA_DIR", "ia3-data")).resolve()


@dataclass
class StudioConfig:
    model: str = "minilm"  # preselected in the model picker (the bundled offline MiniLM)
    sample: str = "sentiment"  # preselected sample dataset
    data_dir: Path = field(default_factory=_default_data_dir)
    workers: int = 1  # embedded worker processes; 0 = the studio only enqueues
    refresh_s: float = 1.0  # how often the Jobs tab reads the database
