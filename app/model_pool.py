"""The studio's models in memory: one Predictor per base model, many adapters on each.

Loads take turns (MODEL_LOCK: the playground, the Train tab's model preview and merged exports
share it). An adapter is loaded under its id and the hash of its weights, at most a few per
base, and forgotten when it is deleted. Callers check who may use an adapter first (app.serving).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ia3engine.errors import AdapterError
from ia3engine.serve import predict
from jobs import registry

logger = logging.getLogger(__name__)

MAX_BASES = 2  # base models kept loaded; the least recently used one is dropped first
MAX_LOADED_ADAPTERS = 16  # adapters kept on one base; the least recently used goes first
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


def adapter_key(adapter: dict) -> str:
    """The name an adapter is loaded under: its id and the hash of its weights, so that an
    adapter that ever gets another's id (or replaced files) is never served the old vectors."""
    return f"adapter{int(adapter['id'])}-{str(adapter.get('sha256') or '')[:16]}"


class PredictorPool:
    """Loaded base models (Predictors) keyed by (base model, task), with their adapters."""

    def __init__(self, max_bases: int = MAX_BASES, max_adapters: int = MAX_LOADED_ADAPTERS):
        self.max_bases, self.max_adapters = max_bases, max_adapters
        self._predictors: OrderedDict[tuple[str, str], object] = OrderedDict()
        # adapter names loaded on each predictor, least recently used first
        self._loaded: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._mixes: dict[tuple[str, str], tuple] = {}  # the recipe of each base's current mix
        self._lock = MODEL_LOCK

    def _predictor(self, key: tuple[str, str]):
        if key in self._predictors:
            self._predictors.move_to_end(key)
            return self._predictors[key]
        while len(self._predictors) >= self.max_bases:
            dropped, _ = self._predictors.popitem(last=False)
            self._loaded.pop(dropped, None)
            self._mixes.pop(dropped, None)
            logger.info("playground: unloaded base %s", dropped[0])
        logger.info("playground: loading base %s for %s", *key)
        self._predictors[key] = predict.Predictor(key[0], key[1])
        self._loaded[key] = OrderedDict()
        return self._predictors[key]

    def _ensure_adapter(self, key, predictor, adapter: dict, keep: set[str]) -> str:
        name = adapter_key(adapter)
        loaded = self._loaded[key]
        if name not in loaded:
            while len(loaded) >= self.max_adapters:
                oldest = next((n for n in loaded if n not in keep), None)
                if oldest is None:
                    break
                self._unload(key, predictor, oldest)
            predictor.add_adapter(name, str(registry.adapter_folder(int(adapter["id"]))))
        loaded[name] = None
        loaded.move_to_end(name)
        return name

    def _unload(self, key, predictor, name: str) -> None:
        self._loaded[key].pop(name, None)
        if name in predictor.adapters:
            predictor.remove_adapter(name)
        recipe = self._mixes.get(key)
        if recipe is not None and name in {n for n, _ in recipe}:
            predictor.remove_adapter(MIX)  # a mix of a dropped adapter is dropped with it
            del self._mixes[key]

    def forget(self, adapter_id: int) -> None:
        """Drop every loaded copy of adapter `adapter_id` (call when it is deleted)."""
        prefix = f"adapter{int(adapter_id)}-"
        with self._lock:
            for key, predictor in self._predictors.items():
                for name in [n for n in self._loaded.get(key, ()) if n.startswith(prefix)]:
                    self._unload(key, predictor, name)

    def _load_all(self, key, predictor, adapters: list[dict]) -> list[str]:
        keep = {adapter_key(a) for a in adapters}
        return [self._ensure_adapter(key, predictor, a, keep) for a in adapters]

    def compare(self, text: str, adapters: list[dict], include_base: bool = True) -> dict:
        """Run `text` through the base and each adapter (all of one base) in one batch."""
        key = _one_base(adapters)
        with self._lock:
            predictor = self._predictor(key)
            names = self._load_all(key, predictor, adapters)
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
        with self._lock:
            predictor = self._predictor(key)
            names = self._load_all(key, predictor, adapters)
            recipe = tuple(
                (name, round(float(w), 4)) for name, w in zip(names, weights, strict=True)
            )
            if self._mixes.get(key) != recipe:
                if key in self._mixes:
                    predictor.remove_adapter(MIX)
                    del self._mixes[key]
                predictor.add_mix(MIX, names, [w for _, w in recipe])
                self._mixes[key] = recipe
            output = predictor.predict([text], [MIX])[0]
        weights_by_id = {f"#{a['id']}": w for a, (_, w) in zip(adapters, recipe, strict=True)}
        return {"base_model": key[0], "task": key[1], "weights": weights_by_id, **output}


POOL = PredictorPool()


def forget_adapter(adapter_id: int) -> None:
    """Drop a deleted adapter from the playground's memory."""
    POOL.forget(adapter_id)
