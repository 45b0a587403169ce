"""What the rows of a mixed-adapter call are, checked before any layer runs.

IA3Model.forward/generate ask here whether `adapter_names` can be routed: the batch-major input
and its rows (multiple-choice inputs flattened), how many rows generate() makes of each prompt,
models known to run their layers sequence-first, DataParallel replicas handed a slice of the
batch, and gradient checkpointing (recomputed blocks would miss the routing). The per-layer
rule of which tensors are routed is routing.py's.
"""

from __future__ import annotations

import torch
from torch import nn

from ia3engine.errors import AdapterError
from ia3engine.layers import IA3Layer
from ia3engine.routing import ONE_ADAPTER_FIX
from ia3engine.wrappers import outer_modules

# Inputs whose leading dimension is the batch (the first found is checked against
# adapter_names), and the rank at which a token input carries multiple-choice choices.
_BATCH_INPUTS = (
    "input_ids",
    "inputs_embeds",
    "inputs",
    "pixel_values",
    "input_values",
    "input_features",
)
_CHOICE_DIMS = {"input_ids": 3, "inputs_embeds": 4}

# transformers models whose targeted layers see (length, batch, ...) tensors
_SEQUENCE_FIRST_TYPES = frozenset({"fsmt", "led", "longformer", "xlnet"})


def batch_input(args, kwargs) -> tuple[str, torch.Tensor] | None:
    """(name, tensor) of the first batch-major input of a forward/generate call, if any."""
    for key in _BATCH_INPUTS:
        if isinstance(kwargs.get(key), torch.Tensor):
            return key, kwargs[key]
    if args and isinstance(args[0], torch.Tensor):
        return "the first argument", args[0]
    return None


def generate_expansion(base_model: nn.Module, kwargs: dict) -> int:
    """How many rows generate() makes of each prompt: max(num_beams, num_return_sequences)."""
    config = kwargs.get("generation_config") or getattr(base_model, "generation_config", None)
    beams = kwargs.get("num_beams") or getattr(config, "num_beams", None) or 1
    returned = kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", 1)
    return max(int(beams), int(returned or 1))


def sequence_first(base_model: nn.Module) -> str | None:
    """Why IA3 layers in `base_model` see sequence-first inputs, or None if none is known to."""
    model_type = getattr(getattr(base_model, "config", None), "model_type", None)
    if model_type in _SEQUENCE_FIRST_TYPES:
        return f"{model_type} models run their layers on sequence-first tensors"
    for path, module in outer_modules(base_model):
        flags = [module] + list(module.children())
        if any(getattr(m, "batch_first", None) is False for m in flags) and any(
            isinstance(m, IA3Layer) for _, m in outer_modules(module)
        ):
            return f"module '{path}' ({type(module).__name__}) runs with batch_first=False"
    return None


def checkpointing(model: nn.Module) -> bool:
    """Whether a transformers model recomputes activations in backward (gradient checkpointing)."""
    # transformers 5 renamed the property; the old name warns on every read, which would also
    # break a torch.compile graph
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def check_batch_rows(names: int, args, kwargs, expansion: int, replica: bool = False) -> int:
    """Check adapter_names against the inputs' batch; returns the rows each input row
    becomes inside the model (multiple-choice inputs (B, choices, L) are flattened).
    `replica`: the call is a torch.nn.DataParallel replica's."""
    found = batch_input(args, kwargs)
    if found is None:
        return expansion  # the layers check their rows
    key, value = found
    if replica and value.shape[0] != names:
        raise AdapterError(
            f"adapter_names has {names} entries but this torch.nn.DataParallel replica got "
            f"{value.shape[0]} rows: DataParallel splits the inputs between devices but "
            "hands every replica the whole adapter_names list, so rows cannot be matched "
            "to adapters. Run mixed batches on one device, or with "
            "DistributedDataParallel where each process passes the adapter_names of its "
            "own rows; or " + ONE_ADAPTER_FIX + "."
        )
    if value.shape[0] != names:
        raise AdapterError(
            f"adapter_names has {names} entries but the batch ({key}) has "
            f"{value.shape[0]} rows. Pass one adapter name per row of the batch."
        )
    if key in _CHOICE_DIMS and value.dim() == _CHOICE_DIMS[key]:
        return expansion * value.shape[1]  # (B, choices, ...) -> B * choices rows
    return expansion
