"""Running a module once per adapter of a mixed batch, where one pass cannot route its rows.

Owns taking rows out of batch-major arguments and putting outputs back in row order (shared with
modules_to_save), and the modules that push one tensor shared by every row through IA3 layers:
DeBERTa's attention projects its relative position embeddings with key_proj/query_proj (leading
dimension 1) and repeats the result for every row, so each row's attention scores use that
projection. No single projection is right for rows of different adapters; in a mixed batch such
a module runs once per adapter on that adapter's rows, which is what running each row alone
with its adapter computes. Outside mixed batches the module's own forward runs unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from ia3engine.errors import AdapterError
from ia3engine.layers import IA3Layer
from ia3engine.routing import ONE_ADAPTER_FIX, RowRouting, current_routing, route_rows

# class name (a transformers module) -> its forward's batch-major arguments; the others
# (relative positions, relative embeddings) are shared by every row. DeBERTa v1 and v2/v3
# and SEW-D name their attention so.
SHARED_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "DisentangledSelfAttention": ("hidden_states", "attention_mask", "query_states"),
}


class PerAdapterForward:
    """Stands in for a module's forward: in a mixed batch, the forward once per adapter."""

    def __init__(self, inner: Callable, batch_args: tuple[str, ...], where: str, own: bool):
        self.inner = inner  # the forward it replaces (bound method, or an earlier hook's)
        self.params = tuple(inspect.signature(inner).parameters)
        self.batch_args = batch_args
        self.where = where
        self.own = own  # whether the module had its own instance-level forward before

    def __call__(self, *args, **kwargs):
        routing = current_routing()
        if routing is None or len(routing.names) == 1:
            return self.inner(*args, **kwargs)
        named = list(zip(self._names_of(args), args, strict=True)) + list(kwargs.items())
        batch_major = [
            value
            for param, value in named
            if param in self.batch_args and isinstance(value, torch.Tensor)
        ]
        if not batch_major:
            raise AdapterError(
                f"Mixed-adapter batch: {self.where} was called without its batch-major inputs "
                f"{list(self.batch_args)}, so its rows cannot be routed; " + ONE_ADAPTER_FIX + "."
            )
        rows_total = batch_major[0].shape[0]
        index = routing.index_for(rows_total, batch_major[0].device, self.where)
        outputs, order = [], []
        for position, name in enumerate(routing.names):
            rows = (index == position).nonzero().squeeze(1)  # (b,): every name has a row
            sub_args = [
                take_rows(value, rows, rows_total) if param in self.batch_args else value
                for param, value in zip(self._names_of(args), args, strict=True)
            ]
            sub_kwargs = {
                key: take_rows(value, rows, rows_total) if key in self.batch_args else value
                for key, value in kwargs.items()
            }
            with route_rows(RowRouting((name,), index.new_zeros(rows.shape[0]))):
                outputs.append(self.inner(*sub_args, **sub_kwargs))
            order.append(rows)
        return combine_rows(outputs, order)

    def _names_of(self, args: tuple) -> list[str | None]:
        """The parameter name of each positional argument (None past the named ones)."""
        return [self.params[i] if i < len(self.params) else None for i in range(len(args))]


def install_per_adapter_forwards(base_model: nn.Module) -> int:
    """Make every module of SHARED_PROJECTIONS that holds IA3 layers run per adapter in a mixed
    batch; returns how many were newly set up. Idempotent; the state dict is untouched."""
    installed = 0
    for path, module in base_model.named_modules():
        batch_args = _shared_projection_args(module)
        if batch_args is None or isinstance(module.__dict__.get("forward"), PerAdapterForward):
            continue
        if not any(isinstance(m, IA3Layer) for m in module.modules()):
            continue
        where = f"module '{path}' ({type(module).__name__})"
        own = "forward" in module.__dict__
        module.forward = PerAdapterForward(module.forward, batch_args, where, own)
        installed += 1
    return installed


def remove_per_adapter_forwards(base_model: nn.Module) -> None:
    """Give every module its forward back (unloading leaves the base model as it was)."""
    for module in base_model.modules():
        stand_in = module.__dict__.get("forward")
        if not isinstance(stand_in, PerAdapterForward):
            continue
        if stand_in.own:
            module.forward = stand_in.inner
        else:
            del module.forward


def _shared_projection_args(module: nn.Module) -> tuple[str, ...] | None:
    cls = type(module)
    if not cls.__module__.startswith("transformers"):
        return None
    return SHARED_PROJECTIONS.get(cls.__name__)


def take_rows(value, rows: torch.Tensor, rows_total: int):
    """`value`'s rows `rows` if it is a tensor with `rows_total` rows; anything else as is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows_total:
        return value.index_select(0, rows)
    return value


def combine_rows(outputs: list, order: list[torch.Tensor]):
    """Outputs of row groups back in row order: group g computed rows `order[g]`."""
    inverse = torch.argsort(torch.cat(order))  # row r of the result comes from here
    return _combine(outputs, inverse)


def _combine(outputs: list, inverse: torch.Tensor):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs).index_select(0, inverse)
    if isinstance(first, tuple):
        return tuple(_combine([o[i] for o in outputs], inverse) for i in range(len(first)))
    if first is None:
        return None
    raise AdapterError(
        f"A module run per adapter group returned {type(first).__name__}; mixed-adapter batches "
        "can route only modules that return tensors or tuples of tensors."
    )
