"""IA3 layer wrappers: a frozen base layer plus one scaling vector per adapter.

Owns the (IA)^3 math: the forward (product of the active adapters, or one adapter per row of
a mixed batch), merging the vectors into the weights, and exact unmerge from a kept original.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from ia3engine.errors import AdapterError, MergeError
from ia3engine.routing import ONE_ADAPTER_FIX, RowRouting, current_routing

logger = logging.getLogger(__name__)

# Vectors for the adapters of one layer, as the forward reads them: name -> parameter.
Vectors = dict[str, torch.Tensor]


class AdapterVectors(nn.ParameterDict):
    """One layer's vectors by adapter name (PEFT's `ia3_l`); the forward calls it to read them.

    Reading through a call lets hooks on it run: accelerate, offloading a model to CPU or disk,
    keeps the vectors on the meta device and loads them only around a call of their module.
    So the call returns the tensors as they are during it (a dict, not a live view, which would
    see them back on the meta device once the call is over), and only the ones asked for: a
    layer holding thousands of adapters must not copy its whole table on every forward.
    """

    __call__ = nn.Module.__call__  # ParameterDict refuses calls; this one is meant to be called

    def forward(self, names: Iterable[str] | None = None) -> Vectors:
        """The vectors of `names` present here (None: all of them, for tools, not forwards)."""
        if names is None:
            return dict(self.items())
        held = self._parameters
        return {name: held[name] for name in names if name in held}


def final_merge_message(names: list[str]) -> str:
    """The one wording for an unmerge after a merge made with keep_original=False."""
    return (
        f"Adapters {names} were merged with keep_original=False, so the original weights were "
        "not kept and cannot be restored. Reload the base model to get them back, or merge "
        "with keep_original=True (the default) when you need unmerge()."
    )


class IA3Layer(nn.Module):
    """A base layer whose input (feedforward adapters) or output (others) is scaled.

    `ia3_l[adapter]` is the vector; `feedforward[adapter]` is that adapter's mode, so two
    adapters on one layer may differ. Subclasses say how a vector is laid onto the weight.
    """

    feature_dim = -1  # where features sit in the layer's input/output tensors

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int):
        super().__init__()
        self.base_layer = base_layer
        self.in_features = in_features
        self.out_features = out_features
        self.ia3_l = AdapterVectors()
        self.feedforward: dict[str, bool] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False
        self.path = ""  # where the layer sits in the base model, for error messages

    # ---- adapters -------------------------------------------------------------------------
    def vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        """PEFT's shape: (out, 1) for output scaling, (1, in) for input scaling."""
        return (1, self.in_features) if feedforward else (self.out_features, 1)

    def _vector_placement(self) -> tuple[torch.device, torch.dtype]:
        weight = self.base_layer.weight
        # fp16/bf16/int bases get fp32 vectors (PEFT's autocast); fp64 bases keep fp64
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        if weight.device.type == "meta":  # offloaded by accelerate: where the layer runs
            return _execution_device(self.base_layer), dtype
        return weight.device, dtype

    def add_adapter(self, name: str, feedforward: bool, init_ones: bool = True) -> None:
        if name in self.ia3_l:
            raise AdapterError(f"Adapter '{name}' already exists on this layer.")
        device, dtype = self._vector_placement()
        shape = self.vector_shape(feedforward)
        vector = torch.ones(shape) if init_ones else torch.randn(shape)
        self.ia3_l[name] = nn.Parameter(vector.to(device=device, dtype=dtype))
        self.feedforward[name] = feedforward

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            raise AdapterError(f"Adapter '{name}' is merged; call unmerge() before deleting it.")
        if name in self.ia3_l:
            del self.ia3_l[name]
            del self.feedforward[name]
        self.active_adapters = [n for n in self.active_adapters if n != name]

    @property
    def weight(self) -> torch.Tensor:
        # model code reads `layer.weight` (T5 checks the dtype of `wo.weight`)
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    # ---- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        routing = current_routing()
        if self.disabled or self.merged:
            if routing is not None and not self.disabled:
                raise AdapterError(
                    "A mixed-adapter batch needs unmerged adapters; call model.unmerge() first."
                )
            return self.base_layer(x, *args, **kwargs)
        # only the vectors this forward uses: the active adapters, or the batch's rows' adapters
        vectors = self.ia3_l(self.active_adapters if routing is None else routing.names)
        if routing is None:
            per_row = False
            scale_in, scale_out = self._active_scales(vectors)  # (in,) / (out,) or None
            if not args and not kwargs and self._fold_is_cheaper(x, scale_in, scale_out):
                return self._folded_forward(x, scale_in, scale_out)
        elif x.shape[0] == 1 and routing.rows > 1:
            # one tensor shared by every row (DeBERTa's relative positions through key_proj)
            per_row = False
            scale_in, scale_out = self._shared_scales(routing, vectors)  # (in,) / (out,) or None
        else:
            per_row = True
            index = routing.index_for(x.shape[0], x.device, self._where, flat=x.dim() == 2)
            scale_in = self._row_scales(routing, index, True, vectors)  # (B, in) or None
            scale_out = self._row_scales(routing, index, False, vectors)  # (B, out) or None
        if scale_in is not None:  # feedforward adapters scale the input
            x = (x.to(scale_in.dtype) * self._broadcast(scale_in, x, per_row)).to(x.dtype)
        y = self.base_layer(x, *args, **kwargs)
        if scale_out is not None:  # the others scale the output, bias included
            scale_out = self._broadcast(scale_out, y, per_row)
            if torch.is_grad_enabled():
                y = (y * scale_out).to(y.dtype)
            else:  # inference: scale in place, one less full-size tensor per layer
                y = y.mul_(scale_out)
        return y

    def _fold_is_cheaper(self, x, scale_in, scale_out) -> bool:
        """Subclasses that can scale the weight instead of the activations say when it pays."""
        return False

    def _folded_forward(self, x, scale_in, scale_out):
        raise NotImplementedError

    def _active_scales(
        self, vectors: Vectors | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Product of the active adapters present here, split by mode."""
        vectors = self.ia3_l if vectors is None else vectors
        scale_in = scale_out = None
        for name in self.active_adapters:
            if name not in vectors:
                continue
            vector = vectors[name].flatten()
            if self.feedforward[name]:
                scale_in = vector if scale_in is None else scale_in * vector
            else:
                scale_out = vector if scale_out is None else scale_out * vector
        return scale_in, scale_out

    def _row_scales(
        self,
        routing: RowRouting,
        index: torch.Tensor,
        feedforward: bool,
        vectors: Vectors | None = None,
    ) -> torch.Tensor | None:
        """(B, features): row i gets its adapter's vector, or ones if it has none here."""
        held = self.ia3_l if vectors is None else vectors
        vectors = [
            held[name].flatten() if name in held and self.feedforward[name] == feedforward else None
            for name in routing.names
        ]
        present = [v for v in vectors if v is not None]
        if not present:
            return None
        ones = present[0].new_ones(present[0].shape)
        table = torch.stack([ones if v is None else v for v in vectors])  # (A, features)
        return table[index]  # (B, features)

    def _shared_scales(
        self, routing: RowRouting, vectors: nn.ParameterDict
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Scales for an input every row shares: exact only if all the batch's adapters agree.

        Decided from names alone (no tensor values), so it stays shape-static under compile.
        """
        scales = []
        for feedforward in (True, False):
            owners = {
                name if name in vectors and self.feedforward[name] == feedforward else None
                for name in routing.names
            }
            if len(owners) > 1:
                raise AdapterError(
                    f"Mixed-adapter batch: {self._where()} got one tensor shared by all "
                    f"{routing.rows} rows (leading dimension 1), but the batch's adapters "
                    f"{list(routing.names)} scale this layer differently, so no single output "
                    "is right for every row. Leave this layer out of target_modules, or "
                    + ONE_ADAPTER_FIX
                    + "."
                )
            (owner,) = owners
            scales.append(None if owner is None else vectors[owner].flatten())
        return scales[0], scales[1]

    def _where(self) -> str:
        kind = type(self.base_layer).__name__
        return f"IA3 layer '{self.path}' ({kind})" if self.path else f"an IA3 layer ({kind})"

    def _broadcast(self, scale: torch.Tensor, t: torch.Tensor, per_row: bool) -> torch.Tensor:
        shape = [1] * t.dim()
        shape[self.feature_dim] = scale.shape[-1]
        if per_row:
            shape[0] = scale.shape[0]
        return scale.view(shape)

    # ---- merge / unmerge ------------------------------------------------------------------
    def merge(
        self,
        adapter_names: list[str],
        safe_merge: bool = False,
        commit: bool = True,
        keep_original: bool = True,
    ) -> list[str]:
        """Scale the weights by the named adapters present here; returns the names merged.

        commit=False only runs the safe_merge check, so a model can check every layer first.
        keep_original=False makes the merge final: no copy of the weights is kept (one kept
        from an earlier merge is dropped too), so it costs no extra memory beyond one layer's
        scaled weight, and unmerge() raises from then on.
        """
        names = [n for n in adapter_names if n in self.ia3_l and n not in self.merged_adapters]
        if names:
            weight, bias = self._read_weight()
            owned = self.reads_a_copy  # a private weight may be scaled in place
            for name in names:
                weight, bias = self._scaled(weight, bias, name, in_place=owned)
                owned = True  # from here on it is the first _scaled's result
                if safe_merge and not (
                    torch.isfinite(weight).all() and (bias is None or torch.isfinite(bias).all())
                ):
                    raise MergeError(
                        "NaNs detected in the merged weights. The adapter "
                        f"{name} seems to be broken: its vector holds NaN/inf or overflows the "
                        "weights. Retrain it or leave it unmerged."
                    )
        if not commit:
            return names
        if not keep_original:
            self.forget_original()  # freed before the write: the peak holds no copy
        if not names:
            return []
        if keep_original and not self.merged_adapters:
            self._keep_original()
        self._write_weight(weight, bias)  # weight and bias are committed together
        self.merged_adapters.extend(names)
        return names

    @property
    def merge_is_final(self) -> bool:
        """Merged without a kept original (keep_original=False): unmerge() is impossible."""
        return self.merged and not self._has_original()

    def unmerge(self) -> bool:
        """Restore the original weights bit for bit; False if nothing was merged."""
        if not self.merged_adapters:
            return False
        if self.merge_is_final:
            raise MergeError(final_merge_message(self.merged_adapters))
        self._restore_original()
        self.merged_adapters.clear()
        return True

    def _scaled(self, weight, bias, name, in_place: bool = False):
        """weight and bias scaled by adapter `name`; in_place: weight is ours to overwrite."""
        raise NotImplementedError

    reads_a_copy = False  # _read_weight gives the weight itself: never scaled in place

    def _read_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = self.base_layer.bias
        return self.base_layer.weight.detach(), None if bias is None else bias.detach()

    @torch.no_grad()
    def _write_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.base_layer.weight.copy_(weight)
        if bias is not None:
            self.base_layer.bias.copy_(bias)

    def _keep_original(self) -> None:
        # a copy, not a division later: unmerge must be exact even for vectors at 0
        weight, bias = self._read_weight()
        self.register_buffer("original_weight", weight.clone(), persistent=False)
        if bias is not None:
            self.register_buffer("original_bias", bias.clone(), persistent=False)

    def _has_original(self) -> bool:
        return "original_weight" in self._buffers

    def _restore_original(self) -> None:
        bias = self._buffers.pop("original_bias", None)
        self._write_weight(self._buffers.pop("original_weight"), bias)

    def forget_original(self) -> None:
        """Make the merge final: drop the copy kept for an exact unmerge."""
        self._buffers.pop("original_weight", None)
        self._buffers.pop("original_bias", None)

    def extra_repr(self) -> str:
        modes = ", ".join(f"{n}:{'ff' if ff else 'out'}" for n, ff in self.feedforward.items())
        return f"in={self.in_features}, out={self.out_features}, adapters=[{modes}]"


def _times(weight: torch.Tensor, scale: torch.Tensor, in_place: bool) -> torch.Tensor:
    """weight * scale in weight's dtype; in place (no second full-size tensor) when allowed.

    Both compute in the promoted dtype and round once to weight's dtype.
    """
    return weight.mul_(scale) if in_place else (weight * scale).to(weight.dtype)


class IA3Linear(IA3Layer):
    """nn.Linear (weight (out, in)) or transformers Conv1D (weight (in, out))."""

    def __init__(self, base_layer: nn.Module):
        transposed = not isinstance(base_layer, nn.Linear)  # Conv1D: fan_in_fan_out
        if transposed:
            in_features, out_features = base_layer.weight.shape
        else:
            in_features, out_features = base_layer.in_features, base_layer.out_features
        super().__init__(base_layer, in_features, out_features)
        self.transposed = transposed

    def _fold_is_cheaper(self, x, scale_in, scale_out) -> bool:
        # Inference only: with autograd, scaling the weight would make the backward compute a
        # full weight gradient. Worth it when the activations outnumber the weight entries.
        if torch.is_grad_enabled() or not _bare_linear(self.base_layer):
            return False
        tokens = x.numel() // self.in_features
        activations = tokens * ((scale_in is not None) * self.in_features)
        activations += tokens * ((scale_out is not None) * self.out_features)
        return activations > self.in_features * self.out_features

    def _folded_forward(self, x, scale_in, scale_out):
        weight, bias = self.base_layer.weight, self.base_layer.bias  # (out, in), (out,)
        if scale_in is not None:
            weight = weight * scale_in  # column j scaled: same as scaling input j
        if scale_out is not None:
            weight = weight * scale_out.unsqueeze(1)
            bias = None if bias is None else (bias * scale_out).to(bias.dtype)
        return nn.functional.linear(x, weight.to(x.dtype), bias)

    def _scaled(self, weight, bias, name, in_place: bool = False):
        vector = self.ia3_l[name].detach()  # (out, 1) or (1, in): broadcasts on (out, in)
        weight = _times(weight, vector.T if self.transposed else vector, in_place)
        if bias is not None and not self.feedforward[name]:
            bias = (bias * vector.flatten()).to(bias.dtype)
        return weight, bias


class IA3Conv(IA3Layer):
    """nn.Conv2d / nn.Conv3d: channels on dim 1, vectors (1, C, 1, 1[, 1])."""

    feature_dim = 1

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer, base_layer.in_channels, base_layer.out_channels)

    def vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        channels = self.in_features if feedforward else self.out_features
        spatial = self.base_layer.weight.dim() - 2
        return (1, channels) + (1,) * spatial

    def _scaled(self, weight, bias, name, in_place: bool = False):
        vector = self.ia3_l[name].detach().flatten()
        out, in_per_group = weight.shape[:2]  # weight (out, in/groups, k...)
        kernel = (1,) * (weight.dim() - 2)
        if self.feedforward[name]:
            # W[o, j] reads input channel group(o) * in_per_group + j
            per_group = vector.view(self.base_layer.groups, in_per_group)
            scale = per_group.repeat_interleave(out // self.base_layer.groups, dim=0)
            weight = _times(weight, scale.view(out, in_per_group, *kernel), in_place)
        else:
            weight = _times(weight, vector.view(out, 1, *kernel), in_place)
            if bias is not None:
                bias = (bias * vector).to(bias.dtype)
        return weight, bias


def _bare_linear(layer: nn.Module) -> bool:
    """Whether calling `layer` is exactly F.linear(x, layer.weight, layer.bias), so the scales
    may be folded into the weight instead of calling it.

    Anything else runs the layer's own forward: a subclass, a forward replaced on the instance
    or a `_hf_hook` (accelerate moves or loads the weight there), a weight left on the meta
    device (offloaded), or forward hooks of the layer or global ones, which must see the call.
    """
    return (
        type(layer).forward is nn.Linear.forward
        and "forward" not in layer.__dict__
        and not hasattr(layer, "_hf_hook")
        and not (layer._forward_hooks or layer._forward_pre_hooks)
        and not (_global_forward_hooks or _global_forward_pre_hooks)
        and layer.weight.device.type != "meta"
    )


def _execution_device(layer: nn.Module) -> torch.device:
    """Where accelerate runs an offloaded layer (its hook's execution device); else the CPU."""
    hook = getattr(layer, "_hf_hook", None)
    for part in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
        device = getattr(part, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")
