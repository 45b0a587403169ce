"""Adapter zips to import into a studio under attack, made without training (peft, offline).

A signed-in user may import one for the bundled MiniLM in a second, where training takes minutes.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import peft
from transformers import AutoModelForSequenceClassification

from ia3engine.training.loading import resolve_model_path


def minilm_adapter_zip(folder: Path, name: str = "anns-adapter.zip") -> Path:
    """A PEFT IA3 adapter for the bundled MiniLM, made without training (peft, offline)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path("minilm"), num_labels=2
    )
    config = peft.IA3Config(
        task_type="SEQ_CLS",
        target_modules=["key", "value", "output.dense"],
        feedforward_modules=["output.dense"],
    )
    peft.get_peft_model(model, config).save_pretrained(folder / "adapter")
    info = {"task": "classify", "kind": "encoder", "labels": ["neg", "pos"], "base_model": "minilm"}
    (folder / "adapter" / "training_info.json").write_text(json.dumps(info))
    archive = folder / name
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((folder / "adapter").iterdir()):
            zipped.write(path, path.name)
    return archive
