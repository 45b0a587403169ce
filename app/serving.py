"""The playground's models: one Predictor per base model, many adapters on each.

All adapters of one base share its weights in memory; a comparison runs as one
mixed-adapter batch (one row per adapter, plus a row for the untuned base).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict

from ia3engine.errors import AdapterError

logger = logging.getLogger(__name__)

MAX_BASES = 2  # base models kept loaded; the least recently used one is dropped first
MIX = "mix"  # the one mixed adapter each base keeps; a new mix replaces it
# transformers loads onto the meta device through process-wide state, so two models loading at
# once in two threads (a preview and the playground) break each other: load one at a time.
MODEL_LOCK = threading.RLock()


def _one_base(adapters: list[dict]) -> tuple[str, str]:
    """(base model, task) shared by all `adapters`, or a message saying they differ."""
    bases = {(a["base_model"], a["task"]) for a in adapters}
    if not bases:
        raise AdapterError(
            "Pick at least one adapter above; the untuned model beside it is its base model. "
            "No adapters yet? Train one in the Train tab."
        )
    if len(bases) > 1:
        listing = "; ".join(
            f"#{a['id']} is a {a['task']} adapter on {a['base_model']}" for a in adapters
        )
        raise AdapterError(
            f"The chosen adapters do not share one base model and task ({listing}). "
            "Pick adapters of one base model to compare or mix them."
        )
    return bases.pop()


class PredictorPool:
    """Loaded base models (Predictors) keyed by (base model, task), with their adapters."""

    def __init__(self, max_bases: int = MAX_BASES):
        self.max_bases = max_bases
        self._predictors: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._loaded: dict[tuple[str, str], set[str]] = {}  # adapter names on each predictor
        self._mixes: dict[tuple[str, str], tuple] = {}  # the recipe of each base's current mix
        self._lock = MODEL_LOCK

    def _predictor(self, key: tuple[str, str]):
        from ia3engine.predict import Predictor

        if key in self._predictors:
            self._predictors.move_to_end(key)
            return self._predictors[key]
        while len(self._predictors) >= self.max_bases:
            dropped, _ = self._predictors.popitem(last=False)
            self._loaded.pop(dropped, None)
            self._mixes.pop(dropped, None)
            logger.info("playground: unloaded base %s", dropped[0])
        logger.info("playground: loading base %s for %s", *key)
        self._predictors[key] = Predictor(key[0], key[1])
        self._loaded[key] = set()
        return self._predictors[key]

    def _ensure_adapter(self, key, predictor, adapter_id: int) -> str:
        from jobs import registry

        name = f"adapter{int(adapter_id)}"
        if name not in self._loaded[key]:
            predictor.add_adapter(name, str(registry.adapter_folder(int(adapter_id))))
            self._loaded[key].add(name)
        return name

    def compare(self, text: str, adapters: list[dict], include_base: bool = True) -> dict:
        """Run `text` through the base and each adapter (all of one base) in one batch."""
        key = _one_base(adapters)
        with self._lock:
            predictor = self._predictor(key)
            names = [self._ensure_adapter(key, predictor, a["id"]) for a in adapters]
            rows = ([None] if include_base else []) + names
            outputs = predictor.predict([text] * len(rows), rows)
        result = {"base_model": key[0], "task": key[1], "base": None, "adapters": []}
        if include_base:
            result["base"] = outputs.pop(0)
        for adapter, output in zip(adapters, outputs, strict=True):
            result["adapters"].append({"id": adapter["id"], "name": adapter["name"], **output})
        return result

    def mix(self, text: str, adapters: list[dict], weights: list[float]) -> dict:
        """Run `text` through the weighted mix of `adapters` (vectors: sum of w_i * l_i)."""
        key = _one_base(adapters)
        recipe = tuple(
            (a["id"], round(float(w), 4)) for a, w in zip(adapters, weights, strict=True)
        )
        with self._lock:
            predictor = self._predictor(key)
            names = [self._ensure_adapter(key, predictor, a["id"]) for a in adapters]
            if self._mixes.get(key) != recipe:
                if key in self._mixes:
                    predictor.remove_adapter(MIX)
                    del self._mixes[key]
                predictor.add_mix(MIX, names, [w for _, w in recipe])
                self._mixes[key] = recipe
            output = predictor.predict([text], [MIX])[0]
        weights_by_id = {f"#{adapter_id}": w for adapter_id, w in recipe}
        return {"base_model": key[0], "task": key[1], "weights": weights_by_id, **output}


POOL = PredictorPool()


def _adapter_rows(adapter_ids: list[int]) -> list[dict]:
    from app.adapter_actions import adapter_info

    rows = []
    for adapter_id in dict.fromkeys(int(i) for i in adapter_ids or []):
        info = adapter_info(adapter_id)  # also refuses adapters the caller may not see
        rows.append({k: info.get(k) for k in ("id", "name", "base_model", "task", "labels")})
    return rows


def _check_text(text: str) -> None:
    if not (text or "").strip():
        raise AdapterError("The input is empty. Type a sentence to run through the models.")


def compare(text: str, adapter_ids: list[int], include_base: bool = True) -> dict:
    """Outputs of the untuned base and of each adapter for one input, side by side."""
    _check_text(text)
    return POOL.compare(text, _adapter_rows(adapter_ids), include_base=include_base)


def mix(text: str, adapter_ids: list[int], weights: list[float]) -> dict:
    """Output of the weighted mix of the adapters for one input."""
    _check_text(text)
    ids = list(dict.fromkeys(int(i) for i in adapter_ids or []))
    if len(ids) < 2:
        raise AdapterError("Pick at least two adapters to mix.")
    weights = [float(w) for w in (weights or [])]
    if len(weights) != len(ids) or not all(math.isfinite(w) for w in weights):
        raise AdapterError(
            f"Give one finite weight per adapter: {len(ids)} adapters, {len(weights)} weights."
        )
    return POOL.mix(text, _adapter_rows(ids), weights)
