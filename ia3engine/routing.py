"""Per-row adapter routing for mixed-adapter batches.

IA3Model.forward puts the batch's row -> adapter table in a per-thread slot; the IA3 layers and
the modules_to_save wrappers read it, so no hook has to thread it through the base model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ia3engine.errors import AdapterError

BASE = "__base__"  # a row named so gets the base model, no adapter


@dataclass(frozen=True)
class RowRouting:
    """Which adapter each row of the batch uses: row i uses `names[index[i]]`."""

    names: tuple[str, ...]  # distinct adapter names, in order of first appearance
    index: torch.Tensor  # (B,) long

    @classmethod
    def from_names(cls, adapter_names: Sequence[str], device=None) -> RowRouting:
        names = tuple(dict.fromkeys(adapter_names))
        position = {name: i for i, name in enumerate(names)}
        index = torch.tensor([position[n] for n in adapter_names], dtype=torch.long, device=device)
        return cls(names, index)

    def index_for(self, rows: int, device: torch.device) -> torch.Tensor:
        """The row index for a tensor with `rows` rows (generate() repeats rows for beams)."""
        index = self.index
        if rows != index.shape[0]:
            if rows % index.shape[0]:
                raise AdapterError(
                    f"adapter_names has {index.shape[0]} entries but a layer saw a batch of "
                    f"{rows} rows. Pass one adapter name per row of the batch."
                )
            # generate() expands each row into consecutive beams / return sequences
            index = index.repeat_interleave(rows // index.shape[0])
        return index.to(device, non_blocking=True)


class _RoutingSlot(threading.local):
    """The routing of the forward running in this thread (the studio serves several threads).

    A thread-local attribute rather than a ContextVar: torch.compile traces attribute reads and
    guards on them, while ContextVar.get() breaks the graph at every IA3 layer. The default is
    set in __init__ (run once per thread), not as a class attribute, which dynamo would not
    guard on.
    """

    def __init__(self):
        self.routing: RowRouting | None = None


_SLOT = _RoutingSlot()


def current_routing() -> RowRouting | None:
    """The routing of the batch being computed, or None for a plain (active-adapter) forward."""
    return _SLOT.routing


def _swap_routing(routing: RowRouting | None) -> RowRouting | None:
    """Make `routing` this thread's routing; returns the one it replaces, for restoring."""
    previous = _SLOT.routing
    _SLOT.routing = routing
    return previous


@contextmanager
def route_rows(routing: RowRouting | None) -> Iterator[None]:
    """Make `routing` visible to every IA3 layer for the duration of one forward/generate."""
    previous = _swap_routing(routing)
    try:
        yield
    finally:
        _swap_routing(previous)
