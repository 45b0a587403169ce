"""Per-row adapter routing for mixed-adapter batches.

IA3Model.forward puts the batch's row -> adapter table in a per-thread slot; the IA3 layers and
the modules_to_save wrappers read it, so no hook has to thread it through the base model.

Which tensors are routed. A layer routes its input by the leading dimension, which must be
batch-major: `rows` (its leading size) is accepted only when it is
- the batch size B (len(adapter_names), checked against the inputs by IA3Model.forward);
- B * k where the caller said each input row becomes k consecutive rows: generate() with
  k = max(num_beams, num_return_sequences), a multiple-choice model with k choices;
- B * m for a 2-D (rows, features) tensor: tokens flattened batch-major, m per row (OPT's
  fc1/fc2 see (B * L, hidden)); a 3-D or larger tensor keeps its batch in front, so there
  only B and B * k are taken, which is what catches (length, batch, ...) layouts;
- 1 with B > 1: a tensor shared by every row (DeBERTa's relative position embeddings go
  through key_proj/query_proj so). A layer handles it only when every adapter in the batch
  scales it alike; modules known to do this (row_groups.py) run once per adapter instead.
Anything else raises AdapterError naming the layer, so a sequence-first tensor (leading size
L, the sequence length) is refused rather than mis-routed unless L happens to equal B or B * k,
or it was flattened to 2-D, which no shape can tell apart: models known to be sequence-first
(IA3Model's list, batch_first=False modules) are refused up front.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ia3engine.errors import AdapterError

BASE = "__base__"  # a row named so gets the base model, no adapter

# the way out of every routing error, ending a sentence: "..., or " + ONE_ADAPTER_FIX + "."
ONE_ADAPTER_FIX = (
    "run one adapter per batch instead (set_adapter, or group the rows by adapter and call "
    "the model once per group)"
)


@dataclass(frozen=True)
class RowRouting:
    """Which adapter each row of the batch uses: row i uses `names[index[i]]`.

    `expansion` is how many consecutive rows each input row becomes inside the model (generate's
    beams, multiple-choice choices); 1 for a plain forward.
    """

    names: tuple[str, ...]  # distinct adapter names, in order of first appearance
    index: torch.Tensor  # (B,) long
    expansion: int = 1

    @classmethod
    def from_names(
        cls, adapter_names: Sequence[str], device=None, expansion: int = 1
    ) -> RowRouting:
        names = tuple(dict.fromkeys(adapter_names))
        position = {name: i for i, name in enumerate(names)}
        index = torch.tensor([position[n] for n in adapter_names], dtype=torch.long, device=device)
        return cls(names, index, max(1, int(expansion)))

    @property
    def rows(self) -> int:
        """B: the number of input rows, one adapter name each."""
        return self.index.shape[0]

    def index_for(
        self,
        rows: int,
        device: torch.device,
        where: str | Callable[[], str] = "a layer",
        flat: bool = False,
    ) -> torch.Tensor:
        """The row index for a tensor with `rows` rows; `flat`: the tensor is 2-D (rows,
        features), so rows may be tokens flattened batch-major (see the module docstring).
        `where` names the caller in the error (a callable is only called then)."""
        index = self.index
        batch = index.shape[0]
        if rows == batch:
            return index.to(device, non_blocking=True)
        if self.expansion > 1 and rows == batch * self.expansion:
            # each input row became `expansion` consecutive rows (beams, choices)
            return index.repeat_interleave(self.expansion).to(device, non_blocking=True)
        if flat and rows % batch == 0:
            # (B * m, features): each row's m tokens (times any expansion) are consecutive
            return index.repeat_interleave(rows // batch).to(device, non_blocking=True)
        where = where() if callable(where) else where
        allowed = f"{batch}" if self.expansion == 1 else f"{batch} or {batch * self.expansion}"
        raise AdapterError(
            f"Mixed-adapter batch: {where} got a tensor with {rows} rows in its leading "
            f"dimension, but adapter_names has {batch} entries (rows routable: {allowed}). "
            "Its input is not batch-major (sequence-first, or a slice of the batch such as a "
            "torch.nn.DataParallel replica gets), so rows cannot be matched to adapters. "
            "Pass one adapter name per row of the batch the model is called with, or "
            + ONE_ADAPTER_FIX
            + "."
        )


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
