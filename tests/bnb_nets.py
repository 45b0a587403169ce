"""A two-layer net whose Linear layers bitsandbytes quantizes, for the 8/4-bit tests."""

import bitsandbytes as bnb
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, lin0: nn.Module, lin1: nn.Module):
        super().__init__()
        self.lin0, self.relu, self.lin1 = lin0, nn.ReLU(), lin1

    def forward(self, x):
        return self.lin1(self.relu(self.lin0(x)))


def float_net(sizes: tuple[int, int, int] = (64, 128, 32)) -> Net:
    torch.manual_seed(0)
    width_in, hidden, width_out = sizes
    return Net(nn.Linear(width_in, hidden), nn.Linear(hidden, width_out))


def quantize(layer: nn.Linear, kind: str, **int8_options) -> nn.Module:
    """`layer` as a bitsandbytes Linear8bitLt ("int8") or nf4 Linear4bit on the CPU."""
    if kind == "int8":
        q = bnb.nn.Linear8bitLt(
            layer.in_features, layer.out_features, has_fp16_weights=False, **int8_options
        )
    else:
        q = bnb.nn.Linear4bit(
            layer.in_features, layer.out_features, compute_dtype=torch.float32, quant_type="nf4"
        )
    q.load_state_dict(layer.state_dict())
    return q.to("cpu")  # moving to a device is what quantizes


def stored_tensors(model) -> list[torch.Tensor]:
    """Copies of every quantized base layer's storage and scales."""
    return [t.clone() for _, layer in model.ia3_layers() for t in layer.stored_tensors()]
