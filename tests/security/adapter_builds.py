"""Real IA3 adapters (train_models.train_adapter: the bundled MiniLM, one step) zipped for
import, and optionally tampered with (what a hostile uploader would send), plus a fake Hub cache.

One step on a 20-row CSV takes a few seconds; the adapters load in the studio like any other.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

INFO = "training_info.json"


def adapter_zip(folder: Path, target: Path, **info_changes) -> Path:
    """A zip of the adapter in `folder`, with `info_changes` written into its training info."""
    info = json.loads((folder / INFO).read_text())
    info.update(info_changes)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.name == INFO:
                archive.writestr(INFO, json.dumps(info))
            else:
                archive.write(path, path.name)
    return target


def fake_hub_model(hf_home: Path, repo: str, config: dict, index: dict | None = None) -> None:
    """A Hub cache entry for `repo` (refs/main and one snapshot) holding only metadata files,
    as `huggingface_hub` leaves it after fetching them: no weights anywhere."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    entry = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text(revision)
    (snapshot / "config.json").write_text(json.dumps(config))
    if index is not None:
        (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
