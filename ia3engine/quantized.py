"""IA3 wrappers for bitsandbytes Linear8bitLt and Linear4bit bases.

The forward is IA3Linear's; merging dequantizes, scales and re-quantizes on the weight's own
device (PEFT refuses), and unmerge puts the original quantized parameter back, so it is exact.
A merge replaces the parameter instead of writing into it: the kept original is the old
parameter itself (no copy), and keep_original=False lets it go as soon as the new one is in.
"""

from __future__ import annotations

import torch
from torch import nn

from ia3engine.layers import IA3Linear


class _QuantizedLinear(IA3Linear):
    """A bitsandbytes base: the original quantized parameter itself is kept for unmerge."""

    reads_a_copy = True  # the dequantized weight is a private fp32 tensor

    def _has_original(self) -> bool:
        return "_original" in self.__dict__

    def forget_original(self) -> None:
        self.__dict__.pop("_original", None)


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM.int8()'s row format, on the weight's device: (CB int8 (out, in), SCB fp32 (out,)).

    CB = round(W * 127 / SCB) with SCB the absolute maximum of each row: what bitsandbytes'
    int8_vectorwise_quant computes, but in fp32 (its CUDA kernel takes fp16 only, which would
    overflow a weight scaled past 65504). `weight` is consumed: scaled in place.
    """
    low, high = torch.aminmax(weight, dim=1)  # no full-size |W| temporary
    scb = torch.maximum(high, -low).float()  # (out,)
    # an all-zero row has SCB 0: its codes are 0 whatever the divisor
    weight.mul_((127.0 / scb.clamp_min(torch.finfo(torch.float32).tiny)).unsqueeze(1))
    return weight.round_().to(torch.int8), scb


class IA3Linear8bit(_QuantizedLinear):
    """bitsandbytes Linear8bitLt: int8 rows with one absmax scale per row (SCB).

    A merge writes a quantized Int8Params (CB/SCB set) on the weight's device: bitsandbytes'
    own .to(device) quantizes only a parameter coming from the CPU, so on CUDA it would leave
    a dense float weight until the next forward. A weight still in float (has_fp16_weights=True,
    or not quantized yet) is read and written in its own dtype, its flags unchanged.
    """

    def _quantized(self) -> bool:
        return self.base_layer.weight.dtype == torch.int8

    def stored_tensors(self) -> list[torch.Tensor]:
        """The int8 rows and their scales as stored (an exact unmerge restores them)."""
        return [self.base_layer.weight.data, self._scb()]

    def _scb(self) -> torch.Tensor:
        weight = self.base_layer.weight
        # bitsandbytes moves SCB from the parameter to the layer state on the first forward
        return weight.SCB if getattr(weight, "SCB", None) is not None else self.base_layer.state.SCB

    @torch.no_grad()
    def _read_weight(self):
        data = self.base_layer.weight.data  # (out, in) int8, or float with has_fp16_weights
        weight = data.to(torch.float32, copy=True)  # private even when data is fp32
        if self._quantized():
            weight.mul_(self._scb().float().unsqueeze(1) / 127.0)  # in place: one fp32 copy
        bias = self.base_layer.bias
        return weight, None if bias is None else bias.detach()

    @torch.no_grad()
    def _write_weight(self, weight, bias):
        import bitsandbytes as bnb

        old = self.base_layer.weight
        if self._quantized():
            cb, scb = quantize_rows_int8(weight)
            new = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        else:
            new = bnb.nn.Int8Params(
                weight.to(old.dtype),
                requires_grad=old.requires_grad,
                has_fp16_weights=old.has_fp16_weights,  # not yet quantized stays so
            )
        self._install(new)
        if bias is not None:
            self.base_layer.bias.copy_(bias)

    def _install(self, param: nn.Parameter) -> None:
        layer = self.base_layer
        layer.weight = param
        # bitsandbytes rebuilds its cached state from the parameter's CB/SCB on the next forward
        layer.state.CB = None
        layer.state.SCB = None

    def _keep_original(self):
        bias = self.base_layer.bias
        weight = self.base_layer.weight
        self._original = (
            weight,
            self._scb().clone() if self._quantized() else None,
            None if bias is None else bias.detach().clone(),
        )

    @torch.no_grad()
    def _restore_original(self):
        param, scb, bias = self._original
        del self._original
        if scb is not None:
            param.SCB = scb
            param.CB = param.data
        self._install(param)
        if bias is not None:
            self.base_layer.bias.copy_(bias)


class IA3Linear4bit(_QuantizedLinear):
    """bitsandbytes Linear4bit: packed 4-bit blocks with a quant_state."""

    def stored_tensors(self) -> list[torch.Tensor]:
        """The packed blocks and their absmax as stored (an exact unmerge restores them)."""
        weight = self.base_layer.weight
        return [weight.data, weight.quant_state.absmax]

    def _packed_for_cpu(self) -> bool:
        # bitsandbytes repacks 4-bit weights in place for its CPU kernel on the first eval
        # forward; that layout has no reliable public inverse, so it is read by matmul
        return bool(getattr(self.base_layer.weight.quant_state, "packing_format_for_cpu", False))

    def _dense_dtype(self) -> torch.dtype:
        state = self.base_layer.weight.quant_state
        return state.original_dtype if self._packed_for_cpu() else state.dtype

    @torch.no_grad()
    def _read_weight(self):
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf

        weight = self.base_layer.weight
        if not self._packed_for_cpu():
            dense = bnbf.dequantize_4bit(weight.data, weight.quant_state).float()  # (out, in)
        else:
            rows = []
            for start in range(0, self.in_features, 1024):  # eye chunks bound the memory
                stop = min(start + 1024, self.in_features)
                dtype = self.base_layer.compute_dtype or torch.float32
                eye = torch.zeros(stop - start, self.in_features, dtype=dtype, device=weight.device)
                eye[:, start:stop].fill_diagonal_(1.0)  # rows start..stop of the identity
                rows.append(bnb.matmul_4bit(eye, weight, quant_state=weight.quant_state))
            dense = torch.cat(rows).float().T  # (in, out) -> (out, in)
        bias = self.base_layer.bias
        return dense, None if bias is None else bias.detach()

    @torch.no_grad()
    def _write_weight(self, weight, bias):
        import bitsandbytes as bnb

        old = self.base_layer.weight
        new = bnb.nn.Params4bit(
            weight.to(self._dense_dtype()),
            requires_grad=False,
            quant_type=old.quant_type,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_storage=old.quant_storage,
            module=self.base_layer,
        )
        # Params4bit.to quantizes on any device (unlike Int8Params); weight is already there
        self._install(new.to(old.device))
        if bias is not None:
            self.base_layer.bias.copy_(bias)

    def _install(self, param: nn.Parameter) -> None:
        # bitsandbytes recovers a parameter's lost quant_state from the layer's (FSDP)
        self.base_layer.weight = param
        self.base_layer.quant_state = param.quant_state

    def _keep_original(self):
        bias = self.base_layer.bias
        self._original = (self.base_layer.weight, None if bias is None else bias.detach().clone())

    @torch.no_grad()
    def _restore_original(self):
        param, bias = self._original
        del self._original
        self._install(param)
        if bias is not None:
            self.base_layer.bias.copy_(bias)
