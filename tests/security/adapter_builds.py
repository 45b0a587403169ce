"""Real IA3 adapters on the bundled MiniLM, trained in the test process for one step, zipped for
import, and optionally tampered with (what a hostile uploader would send), plus a fake Hub cache.

One step on a 20-row CSV takes a few seconds; the adapters load in the studio like any other.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ia3engine import TrainSpec
from ia3engine.training.run import train

INFO = "training_info.json"


def train_adapter(folder: Path, labels: tuple[str, str] = ("down", "up")) -> Path:
    """A one-step MiniLM classifier adapter answering with `labels`, written to `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    data = folder.parent / f"{folder.name}.csv"
    rows = [f"the film was {'good' if i % 2 else 'bad'} {i},{labels[i % 2]}" for i in range(20)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    spec = TrainSpec(
        model="minilm",
        data=str(data),
        steps=1,
        batch_size=4,
        eval_every=0,
        max_length=32,
        out_dir=str(folder),
        name=folder.name,
    )
    train(spec)
    return folder


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
