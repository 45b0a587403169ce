"""Export: a base model with a trained adapter merged into its weights, as a plain model folder.

The folder loads with transformers alone (no adapter library); it is the full model's size.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ia3engine.model import load_ia3_model
from ia3engine.serve.adapter_info import read_training_info
from ia3engine.training.loading import load_base

logger = logging.getLogger(__name__)


def export_merged(adapter_folder, out_dir, *, base_model: str | None = None) -> Path:
    """Merge the adapter in `adapter_folder` into its base and save both model and tokenizer.

    `base_model` overrides the base named in the adapter's training_info.json (e.g. "minilm").
    """
    info = read_training_info(adapter_folder)
    labels = info.get("labels") or None
    encoder_classifier = info.get("kind") == "encoder" and info.get("task") == "classify"
    loaded = load_base(
        base_model or info["base_model"],
        task=info.get("task", "classify"),
        num_labels=len(labels) if encoder_classifier and labels else None,
        labels=labels if encoder_classifier else None,
        device="cpu",
    )
    model = load_ia3_model(loaded.model, adapter_folder)
    merged = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    logger.info("Exported %s merged into %s to %s", adapter_folder, info.get("base_model"), out)
    return out
