"""Running a module once per adapter of a mixed batch, where one pass cannot route its rows.

Owns taking rows out of batch-major arguments and putting outputs back in row order (shared with
modules_to_save), and the modules that push one tensor shared by every row through IA3 layers:
DeBERTa's attention projects its relative position embeddings with key_proj/query_proj (leading
dimension 1) and repeats the result for every row, so each row's attention scores use that
projection. No single projection is right for rows of different adapters; in a mixed batch such
a module runs once per adapter on that adapter's rows, which is what running each row alone
with its adapter computes. Such a module's class gets PerAdapterForward put before it while
adapters are injected (names and state dict unchanged); outside mixed batches, and in mixed
batches of one adapter, its own forward runs unchanged.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ia3engine.errors import AdapterError
from ia3engine.layers import IA3Layer
from ia3engine.routing import ONE_ADAPTER_FIX, RowRouting, current_routing, route_rows
from ia3engine.wrappers import outer_modules

# class name (a transformers module) -> its forward's batch-major arguments; the others
# (relative positions, relative embeddings) are shared by every row. DeBERTa v1 and v2/v3
# and SEW-D name their attention so.
SHARED_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "DisentangledSelfAttention": ("hidden_states", "attention_mask", "query_states"),
}


class PerAdapterForward:
    """Put before a module's own class: in a mixed batch, the module's forward runs once
    per adapter on that adapter's rows. A class, not an instance attribute, so DataParallel
    replicas and deep copies call it on themselves."""

    _ia3_base_class: type  # the module's own class, given back on removal
    _ia3_batch_args: tuple[str, ...] = ()  # the forward's batch-major arguments
    _ia3_params: tuple[str, ...] = ()  # the forward's parameter names, for positional args

    def forward(self, *args, **kwargs):
        routing = current_routing()
        if routing is None or len(routing.names) == 1:
            return super().forward(*args, **kwargs)
        names = [
            self._ia3_params[i] if i < len(self._ia3_params) else None for i in range(len(args))
        ]
        batch_args = self._ia3_batch_args
        named = list(zip(names, args, strict=True)) + list(kwargs.items())
        batch_major = [v for k, v in named if k in batch_args and isinstance(v, torch.Tensor)]
        where = f"module {type(self).__name__}"
        if not batch_major:
            raise AdapterError(
                f"Mixed-adapter batch: {where} was called without its batch-major inputs "
                f"{list(batch_args)}, so its rows cannot be routed; " + ONE_ADAPTER_FIX + "."
            )
        rows_total = batch_major[0].shape[0]
        index = routing.index_for(rows_total, batch_major[0].device, where)
        outputs, order = [], []
        for position, adapter in enumerate(routing.names):
            rows = (index == position).nonzero().squeeze(1)  # (b,): every name has a row
            sub_args = [
                take_rows(value, rows, rows_total) if name in batch_args else value
                for name, value in zip(names, args, strict=True)
            ]
            sub_kwargs = {
                key: take_rows(value, rows, rows_total) if key in batch_args else value
                for key, value in kwargs.items()
            }
            with route_rows(RowRouting((adapter,), index.new_zeros(rows.shape[0]))):
                outputs.append(super().forward(*sub_args, **sub_kwargs))
            order.append(rows)
        return combine_rows(outputs, order)


_PER_ADAPTER_CLASSES: dict[type, type] = {}  # a module's class -> its PerAdapterForward class


def install_per_adapter_forwards(base_model: nn.Module) -> int:
    """Make every module of SHARED_PROJECTIONS that holds IA3 layers run per adapter in a mixed
    batch; returns how many were newly set up. Idempotent; names and state dict are untouched."""
    installed = 0
    for _, module in outer_modules(base_model):
        batch_args = _shared_projection_args(module)
        if batch_args is None or isinstance(module, PerAdapterForward):
            continue
        if any(isinstance(m, IA3Layer) for _, m in outer_modules(module)):
            module.__class__ = _per_adapter_class(type(module), batch_args)
            installed += 1
    return installed


def remove_per_adapter_forwards(base_model: nn.Module) -> None:
    """Give every module its own class back (unloading leaves the base model as it was)."""
    for module in base_model.modules():
        if isinstance(module, PerAdapterForward):
            module.__class__ = module._ia3_base_class


def _per_adapter_class(cls: type, batch_args: tuple[str, ...]) -> type:
    made = _PER_ADAPTER_CLASSES.get(cls)
    if made is None:
        attributes = {
            "_ia3_base_class": cls,
            "_ia3_batch_args": batch_args,
            "_ia3_params": tuple(inspect.signature(cls.forward).parameters)[1:],  # after self
            # the same name and home, so reprs and class-name checks see the model's own class
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        made = _PER_ADAPTER_CLASSES[cls] = type(cls.__name__, (PerAdapterForward, cls), attributes)
    return made


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
