"""What an IA3-wrapped model looks like: the one table of layer types and their wrappers.

Detection, wrapping, preview, unloading and counting all read it from here: which layers IA3
scales, how a wrapper is undone, which parameters an adapter adds, how a module is put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from ia3engine.errors import UnsupportedLayerError
from ia3engine.layers import IA3Conv, IA3Layer, IA3Linear
from ia3engine.quantized import IA3Linear4bit, IA3Linear8bit

VECTOR = "ia3_l"  # the attribute holding an IA3 layer's vectors, and the last part of its key
_ADAPTER_PREFIX = "ia3_"  # every parameter holder an IA3 layer adds starts so (PEFT's rule)
_SAVED_COPIES = "modules_to_save"  # where a saved module keeps one trained copy per adapter
_WRAPPER_INSIDES = {"base_layer", "original_module", _SAVED_COPIES}


@dataclass(frozen=True)
class LayerType:
    """A layer class IA3 scales, matched by class name within its library's modules, so that
    optional libraries (bitsandbytes, transformers) never have to be imported to check."""

    wrapper: type[IA3Layer]
    library: str  # module prefix the class must come from
    linear: bool  # taken by target_modules="all-linear"


LAYER_TYPES: dict[str, LayerType] = {
    "Linear": LayerType(IA3Linear, "torch.nn.modules", linear=True),
    "Conv1D": LayerType(IA3Linear, "transformers", linear=True),
    "Conv2d": LayerType(IA3Conv, "torch.nn.modules", linear=False),
    "Conv3d": LayerType(IA3Conv, "torch.nn.modules", linear=False),
    "Linear8bitLt": LayerType(IA3Linear8bit, "bitsandbytes", linear=True),
    "Linear4bit": LayerType(IA3Linear4bit, "bitsandbytes", linear=True),
}
SUPPORTED_LAYER_TYPES = tuple(LAYER_TYPES)
LINEAR_TYPES = tuple(name for name, kind in LAYER_TYPES.items() if kind.linear)


def unwrap(module: nn.Module) -> nn.Module:
    """The module a wrapper stands in for, through nested wrappers; any other module is itself.

    Read from the attributes PEFT's wrappers share with ours, so theirs are seen through too:
    an IA3 layer's `base_layer`, a saved module's `original_module`.
    """
    while True:
        inner = getattr(module, "base_layer", None)
        if is_saved_module(module):
            inner = module.original_module
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def is_saved_module(module: nn.Module) -> bool:
    """Whether `module` holds an original plus per-adapter copies (modules_to_save)."""
    return isinstance(getattr(module, "original_module", None), nn.Module) and hasattr(
        module, _SAVED_COPIES
    )


def layer_type(module: nn.Module) -> str | None:
    """The LAYER_TYPES name of `module` (looking through IA3 layers), or None.

    A saved module is trained in full by its adapter, so it is never scaled as well; a
    bitsandbytes class counts only as one of its own rows (its int8/4-bit weight is no Linear's).
    """
    if is_saved_module(module):
        return None
    module = unwrap(module)
    from_bitsandbytes = type(module).__module__.startswith("bitsandbytes")
    for cls in type(module).__mro__:
        kind = LAYER_TYPES.get(cls.__name__)
        if kind is not None and cls.__module__.startswith(kind.library):
            if from_bitsandbytes and kind.library != "bitsandbytes":
                return None
            return cls.__name__
    return None


def unsupported_message(name: str, module: nn.Module) -> str:
    return (
        f"Target module {name!r} is a {type(unwrap(module)).__name__}, which IA3 cannot scale. "
        f"Supported layer types: {', '.join(SUPPORTED_LAYER_TYPES)} (bitsandbytes for the last "
        f"two). Narrow target_modules or add {name!r} to exclude_modules."
    )


def wrap_layer(module: nn.Module, name: str = "") -> IA3Layer:
    """The IA3 wrapper for `module`; raises UnsupportedLayerError for other layer types."""
    kind = layer_type(module)
    if kind is None:
        raise UnsupportedLayerError(unsupported_message(name, module))
    layer = LAYER_TYPES[kind].wrapper(module)
    layer.path = name
    return layer


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at the dotted path `name` inside `root`."""
    parent_name, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent_name), leaf, new)


def is_adapter_param(name: str) -> bool:
    """Whether a parameter (or file key) is an IA3 vector: `....ia3_l.<adapter>`."""
    return any(part.startswith(_ADAPTER_PREFIX) for part in name.split("."))


def is_saved_copy(name: str) -> bool:
    """Whether a parameter belongs to an adapter's trained copy of a saved module."""
    return _SAVED_COPIES in name.split(".")


def inside_wrapper(name: str) -> bool:
    """Whether a module path runs through a wrapper's insides (base layer, original, copies,
    vectors): such modules are never targets, and never saved modules themselves."""
    parts = name.split(".")
    return is_adapter_param(name) or not _WRAPPER_INSIDES.isdisjoint(parts)


def outer_modules(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) for `root` ("") and every module below it but the insides of wrappers
    (an IA3 layer's base layer and vectors, a saved module's original and per-adapter copies),
    in `named_modules()` order: that walk filtered by `inside_wrapper`, without visiting what
    it would drop. So a walk costs the base model's size however many adapters are loaded
    (every adapter adds a copy of each saved module, an encoder's head)."""
    seen: set[int] = set()
    stack = [("", root)]
    while stack:
        path, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield path, module
        children = [
            (f"{path}.{name}" if path else name, child)
            for name, child in module._modules.items()
            if child is not None and not _wrapper_inside(name)
        ]
        stack.extend(reversed(children))


def _wrapper_inside(leaf: str) -> bool:
    """Whether a child named `leaf` is a wrapper's inside (what `inside_wrapper` drops)."""
    return leaf in _WRAPPER_INSIDES or leaf.startswith(_ADAPTER_PREFIX)


def param_count(param: nn.Parameter) -> int:
    """Parameter count like PEFT's: bitsandbytes packs two 4-bit values per byte of storage."""
    if type(param).__name__ == "Params4bit":
        return param.numel() * 2 * param.element_size()
    return param.numel()
