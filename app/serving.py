"""The playground's models: one Predictor per base model, many adapters on each.

All adapters of one base share its weights in memory; a comparison runs as one
mixed-adapter batch (one row per adapter, plus a row for the untuned base). People take
turns on the models (round robin), each with a few requests in flight at most.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from app import auth
from ia3engine.errors import AdapterError
from jobs.errors import LimitError

logger = logging.getLogger(__name__)

MAX_BASES = 2  # base models kept loaded; the least recently used one is dropped first
MAX_LOADED_ADAPTERS = 16  # adapters kept on one base; the least recently used goes first
MAX_PER_REQUEST = 8  # adapters compared or mixed in one request
MAX_INPUT_CHARS = 20_000  # one playground input
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
        from ia3engine.serve.predict import Predictor

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
        self._loaded[key] = OrderedDict()
        return self._predictors[key]

    def _ensure_adapter(self, key, predictor, adapter: dict, keep: set[str]) -> str:
        from jobs import registry

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


class Turns:
    """Round-robin turns on the models: whoever waits gets the next turn before a person who
    just had one, so one person's many requests cannot starve another's."""

    def __init__(self):
        self._changed = threading.Condition()
        self._waiting: OrderedDict[str, deque] = OrderedDict()  # person -> their tickets
        self._holder: object | None = None

    @contextmanager
    def turn(self, who: str) -> Iterator[None]:
        ticket = object()
        with self._changed:
            self._waiting.setdefault(who, deque()).append(ticket)
            if self._holder is None:
                self._grant()
            try:
                while self._holder is not ticket:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting: never leave a turn nobody takes
                self._leave(who, ticket)
                raise
        try:
            yield
        finally:
            with self._changed:
                self._holder = None
                self._grant()

    def _leave(self, who: str, ticket: object) -> None:
        if self._holder is ticket:
            self._holder = None
            self._grant()
        elif ticket in self._waiting.get(who, ()):
            self._waiting[who].remove(ticket)
            if not self._waiting[who]:
                del self._waiting[who]

    def _grant(self) -> None:
        if not self._waiting:
            return
        who, tickets = next(iter(self._waiting.items()))
        del self._waiting[who]
        self._holder = tickets.popleft()
        if tickets:  # their next request waits behind everyone else's
            self._waiting[who] = tickets
        self._changed.notify_all()


class InFlight:
    """How many playground requests each person has running or waiting for a turn."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    @contextmanager
    def admitted(self, who: str, limit: int | None) -> Iterator[None]:
        with self._lock:
            count = self._counts.get(who, 0)
            if limit is not None and count >= limit:
                raise LimitError(
                    f"Too many requests in flight: you have {count} playground requests running "
                    f"or waiting, the most this studio allows per person "
                    f"(IA3_MAX_PREDICTS_PER_USER={limit}). Wait for an answer, then send the next."
                )
            self._counts[who] = count + 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[who] -= 1
                if not self._counts[who]:
                    del self._counts[who]


POOL = PredictorPool()
TURNS = Turns()
IN_FLIGHT = InFlight()


@contextmanager
def _fair_share() -> Iterator[None]:
    """Admit the caller's request (at most IA3_MAX_PREDICTS_PER_USER in flight for a signed-in
    person) and wait for their turn on the models."""
    actor = auth.current_actor()
    who = actor.name or ""
    limit = auth.active().limits.max_predicts_per_user if actor.signed_in else None
    with IN_FLIGHT.admitted(who, limit), TURNS.turn(who):
        yield


def forget_adapter(adapter_id: int) -> None:
    """Drop a deleted adapter from the playground's memory."""
    POOL.forget(adapter_id)


def _adapter_rows(adapter_ids: list[int]) -> list[dict]:
    from app.adapter_actions import adapter_info

    rows = []
    for adapter_id in dict.fromkeys(int(i) for i in adapter_ids or []):
        info = adapter_info(adapter_id)  # also refuses adapters the caller may not see
        keys = ("id", "name", "base_model", "task", "labels", "sha256")
        rows.append({k: info.get(k) for k in keys})
    return rows


def _check_text(text: str) -> None:
    if not (text or "").strip():
        raise AdapterError("The input is empty. Type a sentence to run through the models.")
    if len(text) > MAX_INPUT_CHARS:
        raise AdapterError(
            f"The input has {len(text):,} characters; the playground takes at most "
            f"{MAX_INPUT_CHARS:,}. Shorten it (models read only their first few hundred tokens)."
        )


def _check_count(adapter_ids) -> None:
    if len(list(adapter_ids or [])) > MAX_PER_REQUEST:
        raise AdapterError(
            f"{len(list(adapter_ids))} adapters in one request; pick at most {MAX_PER_REQUEST}."
        )


def compare(text: str, adapter_ids: list[int], include_base: bool = True) -> dict:
    """Outputs of the untuned base and of each adapter for one input, side by side."""
    _check_text(text)
    _check_count(adapter_ids)
    with _fair_share():
        return POOL.compare(text, _adapter_rows(adapter_ids), include_base=include_base)


def mix(text: str, adapter_ids: list[int], weights: list[float]) -> dict:
    """Output of the weighted mix of the adapters for one input."""
    _check_text(text)
    _check_count(adapter_ids)
    ids = list(dict.fromkeys(int(i) for i in adapter_ids or []))
    if len(ids) < 2:
        raise AdapterError("Pick at least two adapters to mix.")
    weights = [float(w) for w in (weights or [])]
    if len(weights) != len(ids) or not all(math.isfinite(w) for w in weights):
        raise AdapterError(
            f"Give one finite weight per adapter: {len(ids)} adapters, {len(weights)} weights."
        )
    with _fair_share():
        return POOL.mix(text, _adapter_rows(ids), weights)
