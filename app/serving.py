"""The playground's models: one Predictor per base model, many adapters on each.

All adapters of one base share its weights in memory; a comparison runs as one
mixed-adapter batch (one row per adapter, plus a row for the untuned base).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ia3engine.errors import AdapterError

logger = logging.getLogger(__name__)

MAX_BASES = 2  # base models kept loaded; the least recently used one is dropped first
BASE = "base"


class PredictorPool:
    """Loaded base models (Predictors) keyed by (base model, task), with their adapters."""

    def __init__(self, max_bases: int = MAX_BASES):
        self.max_bases = max_bases
        self._predictors: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._adapters: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def _predictor(self, base_model: str, task: str):
        from ia3engine.predict import Predictor

        key = (base_model, task)
        if key in self._predictors:
            self._predictors.move_to_end(key)
            return self._predictors[key]
        while len(self._predictors) >= self.max_bases:
            dropped, _ = self._predictors.popitem(last=False)
            self._adapters.pop(dropped, None)
            logger.info("playground: unloaded base %s", dropped[0])
        logger.info("playground: loading base %s for %s", base_model, task)
        predictor = Predictor(base_model, task)
        self._predictors[key] = predictor
        self._adapters[key] = set()
        return predictor

    def _ensure_adapter(self, key, predictor, adapter_id: int) -> str:
        from jobs import registry

        name = f"adapter{int(adapter_id)}"
        if name not in self._adapters[key]:
            predictor.add_adapter(name, str(registry.adapter_folder(int(adapter_id))))
            self._adapters[key].add(name)
        return name

    def compare(self, text: str, adapters: list[dict], include_base: bool = True) -> dict:
        """Run `text` through the base and each adapter (all of one base) in one batch."""
        if not adapters and not include_base:
            raise AdapterError("Nothing to run: pick at least one adapter or keep the base.")
        bases = {(a["base_model"], a["task"]) for a in adapters}
        if len(bases) > 1:
            listing = "; ".join(f"#{a['id']} is on {a['base_model']}" for a in adapters)
            raise AdapterError(
                f"The chosen adapters use different base models ({listing}). "
                "Pick adapters of one base model to compare them side by side."
            )
        if not bases:
            raise AdapterError(
                "Pick at least one adapter above; the untuned model beside it is its base model. "
                "No adapters yet? Train one in the Train tab."
            )
        base_model, task = bases.pop()
        with self._lock:
            key = (base_model, task)
            predictor = self._predictor(base_model, task)
            names = [self._ensure_adapter(key, predictor, a["id"]) for a in adapters]
            rows = ([None] if include_base else []) + names
            outputs = predictor.predict([text] * len(rows), rows)
        result = {"base_model": base_model, "task": task, "base": None, "adapters": []}
        if include_base:
            result["base"] = outputs.pop(0)
        for adapter, output in zip(adapters, outputs, strict=True):
            result["adapters"].append({"id": adapter["id"], "name": adapter["name"], **output})
        return result


POOL = PredictorPool()


def _adapter_rows(adapter_ids: list[int]) -> list[dict]:
    from app.adapter_actions import adapter_info

    rows = []
    for adapter_id in adapter_ids or []:
        info = adapter_info(int(adapter_id))
        rows.append({k: info.get(k) for k in ("id", "name", "base_model", "task", "labels")})
    return rows


def compare(text: str, adapter_ids: list[int], include_base: bool = True) -> dict:
    """Outputs of the untuned base and of each adapter for one input, side by side."""
    if not (text or "").strip():
        raise AdapterError("The input is empty. Type a sentence to run through the models.")
    return POOL.compare(text, _adapter_rows(adapter_ids), include_base=include_base)
