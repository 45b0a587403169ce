"""The served models: per (base model, task) one Predictor, its scheduler (a Batcher) and its
adapter cache; the playground and the inference server share them, so their requests are
batched together.

Bases are kept least recently used first: at most IA3_SERVE_MAX_BASES (checked before a load,
as a base's size is known only once it is loaded) and within IA3_SERVE_BASES_MB (checked after
each batch; an encoder holds one base per label count, so its size grows with its adapters).
A dropped base's scheduler answers what is queued, then stops. Callers check who may use an
adapter first (app.inference, app.serving) and pass it as an AdapterSource.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

from app.adapter_cache import MODEL_LOCK, AdapterCache, AdapterSource, MixSource
from app.serve_settings import ServeSettings
from ia3engine.errors import AdapterError
from ia3engine.serve import predict
from ia3engine.serve.batcher import Batcher

logger = logging.getLogger(__name__)

BASE_NAME = "base"  # a generate base's untuned adapter (vectors at one): the base's own rows


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


def source_of(adapter: dict) -> AdapterSource:
    return AdapterSource(int(adapter["id"]), str(adapter.get("sha256") or ""))


@dataclass
class Served:
    """One loaded base: its Predictor, scheduler and adapter cache."""

    key: tuple[str, str]
    predictor: object
    batcher: Batcher
    cache: AdapterCache
    base_bytes: int = 0  # measured by its own scheduler thread after each batch


class PredictorPool:
    """Loaded base models keyed by (base model, task), each with its scheduler and cache."""

    def __init__(self, settings: ServeSettings | None = None):
        self._settings = settings
        self._served: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()  # the dicts above; never held while a model runs

    @property
    def settings(self) -> ServeSettings:
        if self._settings is None:
            self._settings = ServeSettings.from_env()
        return self._settings

    # ---- requests ----------------------------------------------------------------------------
    def submit(
        self, base_model, task, texts, names, sources=(), *, max_new_tokens=None, on_piece=None
    ) -> Future:
        """Queue rows (one adapter key, base row or None per text) on the base's scheduler;
        `sources` are what the rows need loaded; on_piece(row, text) streams generated text
        (Batcher.submit). Raises QueueFull when the queue is full."""
        for _ in range(3):  # a base dropped between lookup and submit is loaded again
            served = self.served(base_model, task)
            if not served.batcher.closed:
                try:
                    return served.batcher.submit(
                        texts,
                        names,
                        max_new_tokens=max_new_tokens,
                        context=tuple(sources),
                        on_piece=on_piece,
                    )
                except Exception:
                    if not served.batcher.closed:
                        raise
        raise AdapterError("The model was unloaded while queueing the request; send it again.")

    def run(self, base_model, task, texts, names, sources=(), *, max_new_tokens=None) -> list:
        future = self.submit(base_model, task, texts, names, sources, max_new_tokens=max_new_tokens)
        return future.result()

    # ---- bases -------------------------------------------------------------------------------
    def served(self, base_model: str, task: str) -> Served:
        """The loaded base (base_model, task), loaded now if needed (one load at a time)."""
        key = (str(base_model), str(task))
        with self._lock:
            found = self._served.get(key)
            if found is not None and not found.batcher.closed:
                self._served.move_to_end(key)
                return found
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._served.get(key)
                if found is not None and not found.batcher.closed:
                    return found
                while len(self._served) >= self.settings.max_bases:
                    self._drop(next(iter(self._served)))
            logger.info("serving: loading base %s for %s", *key)
            with MODEL_LOCK:
                predictor = predict.Predictor(key[0], key[1])
                if key[1] == "generate":
                    predictor.add_untuned(name=BASE_NAME)
            served = self._serve(key, predictor)
            with self._lock:
                self._served[key] = served
                self._loading.pop(key, None)
            return served

    def _serve(self, key, predictor) -> Served:
        settings = self.settings
        holder: dict[str, Served] = {}

        def prepare(batch) -> None:
            served = holder["served"]
            served.cache.ensure(source for request in batch for source in request.context or ())
            served.base_bytes = predictor.base_bytes()
            self._fit_bases(keep=key)

        batcher = Batcher(
            predictor,
            max_batch_rows=settings.max_batch_rows,
            max_delay_s=settings.max_delay_ms / 1000,
            max_queued_rows=settings.max_queued_rows,
            prepare=prepare,
            start=False,
            name=f"serve-{key[0]}-{key[1]}"[:60],
        )
        cache = AdapterCache(predictor, settings.cache_bytes, lock=batcher.lock)
        served = holder["served"] = Served(key, predictor, batcher, cache)
        if hasattr(predictor, "base_bytes"):
            served.base_bytes = predictor.base_bytes()
        batcher.start()
        return served

    def _fit_bases(self, keep) -> None:
        """Drop the least recently used other bases while all together exceed the budget."""
        with self._lock:
            while sum(s.base_bytes for s in self._served.values()) > self.settings.bases_bytes:
                oldest = next((k for k in self._served if k != keep), None)
                if oldest is None:
                    return
                self._drop(oldest)

    def _drop(self, key) -> None:  # with self._lock held
        served = self._served.pop(key)
        served.batcher.close(timeout=0)  # answers what is queued, then its thread ends
        logger.info("serving: unloaded base %s (%s)", *key)

    def forget(self, adapter_id: int) -> None:
        """Drop every loaded copy of adapter `adapter_id` (call when it is deleted)."""
        with self._lock:
            caches = [s.cache for s in self._served.values()]
        for cache in caches:  # outside self._lock: a cache waits for its base's running batch
            cache.forget(adapter_id)

    def stats(self) -> dict:
        with self._lock:
            served = list(self._served.values())
        return {
            f"{s.key[0]} ({s.key[1]})": {
                **s.batcher.stats(),
                "adapters_loaded": s.cache.count,
                "adapter_bytes": s.cache.bytes_held,
                "base_bytes": s.base_bytes,
            }
            for s in served
        }

    def close(self) -> None:
        with self._lock:
            for key in list(self._served):
                self._drop(key)

    # ---- the playground ----------------------------------------------------------------------
    def compare(self, text: str, adapters: list[dict], include_base: bool = True) -> dict:
        """Run `text` through the base and each adapter (all of one base) in one batch."""
        key = _one_base(adapters)
        sources = [source_of(a) for a in adapters]
        names = [s.key for s in sources]
        rows = ([predict.base_row(names[0])] if include_base else []) + names
        outputs = self.run(*key, [text] * len(rows), rows, sources)
        result = {"base_model": key[0], "task": key[1], "base": None, "adapters": []}
        if include_base:
            result["base"] = outputs.pop(0)
        for adapter, output in zip(adapters, outputs, strict=True):
            result["adapters"].append({"id": adapter["id"], "name": adapter["name"], **output})
        return result

    def mix(self, text: str, adapters: list[dict], weights: list[float]) -> dict:
        """Run `text` through the weighted mix of `adapters` (vectors: sum of w_i * l_i)."""
        key = _one_base(adapters)
        mix = MixSource(
            tuple(source_of(a) for a in adapters), tuple(round(float(w), 4) for w in weights)
        )
        output = self.run(*key, [text], [mix.key], [mix])[0]
        weights_by_id = {f"#{a['id']}": w for a, w in zip(adapters, mix.weights, strict=True)}
        return {"base_model": key[0], "task": key[1], "weights": weights_by_id, **output}


POOL = PredictorPool()


def forget_adapter(adapter_id: int) -> None:
    """Drop a deleted adapter from the served models' memory."""
    POOL.forget(adapter_id)
