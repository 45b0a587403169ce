"""The sentence embedding an encoder was trained to produce, read from its own files.

A sentence-transformers model ships `1_Pooling/config.json`, naming how its token states
become one vector (mean, [CLS], max, or mean scaled by sqrt(length); several modes are
concatenated). The pair objective compares rows in that space, the one the body's pre-training
made meaningful; an encoder without the file gets the masked mean, the usual choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ia3engine.hub_files import hub_json

POOLING_FILE = "1_Pooling/config.json"
# sentence-transformers' keys, in the order it concatenates them
MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
DEFAULT = ("mean",)


def sentence_pooling(path: str) -> tuple[str, ...]:
    """The pooling modes of the model at `path` (a folder or a Hub id); DEFAULT without a
    readable pooling file."""
    folder = Path(path)
    if folder.is_dir():
        try:
            config = json.loads((folder / POOLING_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return DEFAULT
    else:
        config = hub_json(path, POOLING_FILE)
    if not isinstance(config, dict):
        return DEFAULT
    modes = tuple(mode for key, mode in MODES.items() if config.get(key) is True)
    return modes or DEFAULT


def sentence_embedding(
    hidden: torch.Tensor, mask: torch.Tensor | None, modes: tuple[str, ...]
) -> torch.Tensor:
    """Pool token states (B, T, d) with the attention mask (B, T) into (B, d * len(modes))."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], device=hidden.device)
    weight = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    tokens = weight.sum(dim=1).clamp(min=1)  # (B, 1)
    summed = (hidden * weight).sum(dim=1)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(weight == 0, float("-inf")).amax(dim=1))
        elif mode == "mean_sqrt_len":
            parts.append(summed / tokens.sqrt())
        else:
            parts.append(summed / tokens)
    return torch.cat(parts, dim=-1)
