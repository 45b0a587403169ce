"""The adapters kept on one base model: loaded from the registry on first use, held in a
byte-bounded least-recently-used cache, invalidated when the registry changes.

An adapter is held under its id and the hash of its weights (adapter_key), so a new version
(another sha256) is never answered with the old vectors; loading it drops the old one, and a
deleted adapter is dropped by forget(). The bytes counted are those the adapter really holds on
the device: its vectors and saved copies (heads), and an encoder's untuned twin. The adapters of
the batch being prepared are never evicted, even when they alone exceed the budget. Label sets
(classify with the untuned base over labels a request names) are held alike, by their labels.

Only the base's scheduler thread runs `ensure` (its prepare hook), under the scheduler's lock;
forget() takes the same lock, so the Predictor never changes under a running forward.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from jobs import registry

logger = logging.getLogger(__name__)

# transformers loads onto the meta device through process-wide state, so two models loading at
# once in two threads (a preview and the playground) break each other: load one at a time.
MODEL_LOCK = threading.RLock()


def adapter_key(adapter: dict) -> str:
    """The name an adapter is loaded under: its id and the hash of its weights, so that an
    adapter that ever gets another's id (or replaced files) is never served the old vectors."""
    return f"adapter{int(adapter['id'])}-{str(adapter.get('sha256') or '')[:16]}"


@dataclass(frozen=True)
class AdapterSource:
    """A registry adapter, checked for the caller already."""

    id: int
    sha256: str

    @property
    def key(self) -> str:
        return adapter_key({"id": self.id, "sha256": self.sha256})


@dataclass(frozen=True)
class MixSource:
    """A weighted mix of registry adapters (vectors: sum of w_i * l_i)."""

    parts: tuple[AdapterSource, ...]
    weights: tuple[float, ...]

    @property
    def key(self) -> str:
        recipe = [
            [p.key, round(float(w), 4)] for p, w in zip(self.parts, self.weights, strict=True)
        ]
        return "mix-" + hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LabelsSource:
    """The untuned base answering by rank classification over `labels` (Predictor.add_labels)."""

    labels: tuple[str, ...]

    @property
    def key(self) -> str:
        return "labels-" + hashlib.sha256(json.dumps(list(self.labels)).encode()).hexdigest()[:16]


# A label set holds no tensors, only its tokenized choices and bookkeeping; it is counted at
# this estimate so that label sets, however many requests bring, stay within the budget.
LABELS_BYTES = 4096


class AdapterCache:
    """Adapters loaded on one Predictor, least recently used first, within `budget_bytes`."""

    def __init__(
        self,
        predictor,
        budget_bytes: int,
        *,
        lock=None,
        folder_of: Callable[[int], object] | None = None,
    ):
        self.predictor, self.budget_bytes = predictor, int(budget_bytes)
        self.lock = lock if lock is not None else threading.RLock()
        self._folder_of = folder_of or (lambda adapter_id: registry.adapter_folder(adapter_id))
        self._held: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._mixes: dict[str, set[str]] = {}  # a mix's key -> the keys it is made of
        self.loads = 0  # adapters (and mixes) loaded so far
        self._bytes = self._count = 0  # kept in step with _held, for readers outside the lock

    @property
    def bytes_held(self) -> int:
        """Bytes of the adapters held (read without waiting for a running batch)."""
        return self._bytes

    @property
    def count(self) -> int:
        return self._count

    def keys(self) -> list[str]:
        """The keys held, least recently used first."""
        with self.lock:
            return list(self._held)

    def ensure(self, sources: Iterable) -> None:
        """Load what `sources` name (AdapterSource / MixSource / LabelsSource), mark them used, then evict the
        least recently used others until the cache is within its budget."""
        with self.lock:
            pinned: set[str] = set()
            for source in sources:
                pinned |= self._load(source, pinned)
            self._evict(pinned)

    def forget(self, adapter_id: int) -> None:
        """Drop every version of adapter `adapter_id` and the mixes made of it (a delete)."""
        prefix = f"adapter{int(adapter_id)}-"
        with self.lock:
            for key in [k for k in self._held if k.startswith(prefix)]:
                self._unload(key)

    # ---- inside ------------------------------------------------------------------------------
    def _load(self, source, pinned: set[str]) -> set[str]:
        if isinstance(source, MixSource):
            used = set()
            for part in source.parts:
                used |= self._load(part, pinned | used)
            key = source.key
            if key not in self._held:
                names = [p.key for p in source.parts]
                self.predictor.add_mix(key, names, [float(w) for w in source.weights])
                self._hold(key, self.predictor.adapter_bytes(key))
                self._mixes[key] = set(names)
            self._held.move_to_end(key)
            return used | {key}
        key = source.key
        if isinstance(source, LabelsSource):
            if key not in self._held:
                with MODEL_LOCK:  # the first label set on a base loads the base
                    self.predictor.add_labels(key, list(source.labels))
                self._hold(key, LABELS_BYTES + sum(len(label) for label in source.labels))
            self._held.move_to_end(key)
            return {key}
        if key not in self._held:
            # another version of the same adapter is stale from now on
            prefix = f"adapter{int(source.id)}-"
            for old in [k for k in self._held if k.startswith(prefix) and k not in pinned]:
                self._unload(old)
            folder = self._folder_of(int(source.id))
            with MODEL_LOCK:
                self.predictor.add_adapter(key, str(folder))
            self._hold(key, self.predictor.adapter_bytes(key))
            logger.info("serving: loaded %s (%d bytes)", key, self._held[key])
        self._held.move_to_end(key)
        return {key}

    def _hold(self, key: str, size: int) -> None:
        self._held[key] = size
        self._bytes, self._count, self.loads = self._bytes + size, self._count + 1, self.loads + 1

    def _evict(self, pinned: set[str]) -> None:
        while self.bytes_held > self.budget_bytes:
            oldest = next((k for k in self._held if k not in pinned), None)
            if oldest is None:
                return  # only this batch's adapters are left: they stay for it
            self._unload(oldest)

    def _unload(self, key: str) -> None:
        if key not in self._held:
            return
        for mix in [m for m, parts in self._mixes.items() if key in parts]:
            self._unload(mix)  # a mix of a dropped adapter is dropped with it
        self._bytes, self._count = self._bytes - self._held.pop(key), self._count - 1
        self._mixes.pop(key, None)
        if key in self.predictor.adapters:
            self.predictor.remove_adapter(key)
        logger.info("serving: unloaded %s", key)
