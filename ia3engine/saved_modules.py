"""modules_to_save: a module trained in full per adapter (e.g. a classification head).

The wrapper keeps the frozen original plus one deep copy per adapter under
`modules_to_save.<adapter>` (PEFT's layout); a mixed batch sends each row to its adapter's copy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ia3engine.errors import AdapterError
from ia3engine.routing import current_routing
from ia3engine.row_groups import combine_rows, take_rows


class SavedModule(nn.Module):
    """The original module and per-adapter trainable copies; one copy is active at a time."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original_module = original
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: str | None = None
        self.disabled = False
        original.requires_grad_(False)

    def add_adapter(self, name: str, source: nn.Module | None = None) -> None:
        """A trainable deep copy of `source` (default: the original) for adapter `name`."""
        if name in self.modules_to_save:
            raise AdapterError(f"Adapter '{name}' already has a saved copy of this module.")
        module = copy.deepcopy(self.original_module if source is None else source)
        self.modules_to_save[name] = module.requires_grad_(True)

    def delete_adapter(self, name: str) -> None:
        if name in self.modules_to_save:
            del self.modules_to_save[name]
        if self.active_adapter == name:
            self.active_adapter = None

    def check_active(self, names: list[str]) -> list[str]:
        """The adapters in `names` with a copy here; more than one cannot be active."""
        present = [n for n in names if n in self.modules_to_save]
        if len(present) > 1:
            raise AdapterError(
                f"Adapters {present} each have their own copy of a saved module, and only one "
                "copy can be active at a time. Activate one of them, or use adapter_names= to "
                "route rows of a batch to different adapters."
            )
        return present

    def set_adapter(self, names: list[str], trainable: set[str]) -> None:
        """Activate the one adapter in `names` that has a copy here; freeze the rest."""
        present = self.check_active(names)
        self.active_adapter = present[0] if present else None
        for name, module in self.modules_to_save.items():
            module.requires_grad_(name in trainable)

    def module_for(self, name: str | None) -> nn.Module:
        if self.disabled or name is None or name not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[name]

    def forward(self, *args, **kwargs):
        routing = current_routing()
        if routing is None or self.disabled:
            return self.module_for(self.active_adapter)(*args, **kwargs)
        first = _first_tensor(args, kwargs)
        rows_total = first.shape[0]
        where = f"a modules_to_save copy ({type(self.original_module).__name__})"
        index = routing.index_for(rows_total, first.device, where, flat=first.dim() == 2)
        groups: dict[int, list[int]] = {}  # id(module) -> positions in routing.names
        modules: dict[int, nn.Module] = {}
        for position, name in enumerate(routing.names):
            module = self.module_for(name)
            groups.setdefault(id(module), []).append(position)
            modules[id(module)] = module
        if len(groups) == 1:  # every row uses the same copy: no split needed
            return next(iter(modules.values()))(*args, **kwargs)
        if torch.compiler.is_compiling():
            return _whole_batch_forward(modules, groups, index, args, kwargs)
        outputs, order = [], []
        for key, positions in groups.items():
            rows = torch.isin(index, index.new_tensor(positions)).nonzero().squeeze(1)  # (b,)
            if rows.numel() == 0:
                continue
            sub_args = [take_rows(a, rows, rows_total) for a in args]
            sub_kwargs = {k: take_rows(v, rows, rows_total) for k, v in kwargs.items()}
            outputs.append(modules[key](*sub_args, **sub_kwargs))
            order.append(rows)
        return combine_rows(outputs, order)


def _whole_batch_forward(modules: dict, groups: dict, index: torch.Tensor, args, kwargs):
    """Every copy runs on the whole batch and each row keeps its own copy's output.

    Used under torch.compile: splitting the rows needs nonzero(), whose data-dependent shape
    breaks the graph. It costs one pass per distinct copy, small for the heads people save.
    """
    result = None
    for key, positions in groups.items():
        output = modules[key](*args, **kwargs)
        mine = torch.isin(index, index.new_tensor(positions))  # (B,) rows of this copy
        result = output if result is None else _select(mine, output, result)
    return result


def _select(rows: torch.Tensor, chosen, other):
    """`chosen` where `rows` is True, `other` elsewhere, through tuples of batch-major tensors."""
    if isinstance(chosen, torch.Tensor) and chosen.dim() > 0 and chosen.shape[0] == len(rows):
        return torch.where(rows.view(-1, *[1] * (chosen.dim() - 1)), chosen, other)
    if isinstance(chosen, tuple):
        return tuple(_select(rows, c, o) for c, o in zip(chosen, other, strict=True))
    if chosen is None:
        return None
    raise AdapterError(
        f"A saved module returned {type(chosen).__name__} without a row per batch entry; "
        "mixed-adapter batches can route only modules that return batch-major tensors or "
        "tuples of them."
    )


def _first_tensor(args, kwargs) -> torch.Tensor:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    raise AdapterError("A saved module was called without a tensor; cannot route rows.")
