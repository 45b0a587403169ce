"""IA3 wrappers for bitsandbytes Linear8bitLt and Linear4bit bases.

The forward is IA3Linear's; merging dequantizes, scales and re-quantizes (PEFT refuses), and
unmerge puts the original quantized tensors back, so it is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from ia3engine.layers import IA3Linear


class _QuantizedLinear(IA3Linear):
    """A bitsandbytes base: the original quantized parameter itself is kept for unmerge."""

    def forget_original(self) -> None:
        self.__dict__.pop("_original", None)


class IA3Linear8bit(_QuantizedLinear):
    """bitsandbytes Linear8bitLt: int8 rows with one absmax scale per row (SCB)."""

    def _scb(self) -> torch.Tensor:
        weight = self.base_layer.weight
        # bitsandbytes moves SCB from the parameter to the layer state on the first forward
        return weight.SCB if getattr(weight, "SCB", None) is not None else self.base_layer.state.SCB

    def _read_weight(self):
        int8 = self.base_layer.weight.data  # (out, in) int8
        weight = int8.float() * (self._scb().float().unsqueeze(1) / 127.0)
        bias = self.base_layer.bias
        return weight, None if bias is None else bias.detach()

    @torch.no_grad()
    def _write_weight(self, weight, bias):
        import bitsandbytes as bnb

        device = self.base_layer.weight.device
        old = self.base_layer.weight
        new = bnb.nn.Int8Params(
            weight.to("cpu" if device.type == "meta" else device),
            requires_grad=False,
            has_fp16_weights=old.has_fp16_weights,
        )
        self._install(new.to(device), None)
        if bias is not None:
            self.base_layer.bias.copy_(bias)

    def _install(self, param: nn.Parameter, scb: torch.Tensor | None) -> None:
        layer = self.base_layer
        layer.weight = param
        if scb is not None:
            param.SCB = scb
            param.CB = param.data
        # let bitsandbytes rebuild its cached state from the parameter on the next forward
        layer.state.CB = None
        layer.state.SCB = None

    def _keep_original(self):
        bias = self.base_layer.bias
        self._original = (
            self.base_layer.weight,
            self._scb().clone(),
            None if bias is None else bias.detach().clone(),
        )

    @torch.no_grad()
    def _restore_original(self):
        param, scb, bias = self._original
        del self._original
        self._install(param, scb)
        if bias is not None:
            self.base_layer.bias.copy_(bias)


class IA3Linear4bit(_QuantizedLinear):
    """bitsandbytes Linear4bit: packed 4-bit blocks with a quant_state."""

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
        )
        self.base_layer.weight = new.to(old.device)
        if bias is not None:
            self.base_layer.bias.copy_(bias)

    def _keep_original(self):
        bias = self.base_layer.bias
        self._original = (self.base_layer.weight, None if bias is None else bias.detach().clone())

    @torch.no_grad()
    def _restore_original(self):
        param, bias = self._original
        del self._original
        self.base_layer.weight = param
        if bias is not None:
            self.base_layer.bias.copy_(bias)
