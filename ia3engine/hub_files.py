"""Small JSON files of a Hub model (config, pooling, index), read without loading it; light."""

from __future__ import annotations

import json


def hub_json(model: str, filename: str) -> dict | None:
    """A JSON object file of a Hub model (from the cache when offline), or None if unknown."""
    from huggingface_hub import hf_hub_download

    try:
        with open(hf_hub_download(model, filename), encoding="utf-8") as handle:
            value = json.load(handle)
    except Exception:  # not on the Hub, not cached, offline, bad id, or not JSON: unknown
        return None
    return value if isinstance(value, dict) else None
