"""IA3 on bitsandbytes Linear8bitLt / Linear4bit layers (bitsandbytes runs on the CPU here):
forward against float layers, a training step, merge by re-quantizing, exact unmerge."""

import pytest
import torch
from bnb_nets import Net, float_net, quantize, stored_tensors

from ia3engine.config import IA3Config
from ia3engine.model import get_ia3_model
from ia3engine.quantized import IA3Linear4bit, IA3Linear8bit

bnb = pytest.importorskip("bitsandbytes")

KINDS = ["int8", "nf4"]
CONFIG = dict(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"])


def _quantized_net(kind: str) -> Net:
    net = float_net()
    return Net(quantize(net.lin0, kind, threshold=0.0), quantize(net.lin1, kind, threshold=0.0))


def _vectors_near_one(model, scale=0.2):
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.copy_(1 + scale * torch.randn(param.shape, generator=gen))


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def _x():
    return torch.randn(8, 64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_on_quantized_layers_matches_float_layers(kind):
    ours = get_ia3_model(_quantized_net(kind), IA3Config(**CONFIG))
    reference = get_ia3_model(float_net(), IA3Config(**CONFIG))
    layer_type = IA3Linear8bit if kind == "int8" else IA3Linear4bit
    assert all(isinstance(layer, layer_type) for _, layer in ours.ia3_layers())
    _vectors_near_one(ours)
    _vectors_near_one(reference)
    with torch.no_grad():
        error = _rel(ours(_x()), reference(_x()))
    print(f"{kind}: IA3 forward on quantized vs float layers, relative error {error:.4f}")
    assert error < (0.02 if kind == "int8" else 0.25)


@pytest.mark.parametrize("kind", KINDS)
def test_training_step_on_quantized_base_updates_only_vectors(kind):
    model = get_ia3_model(_quantized_net(kind), IA3Config(**CONFIG))
    model.train()
    frozen = stored_tensors(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(_x()).pow(2).mean().backward()
    optimizer.step()
    vectors = [p for n, p in model.named_parameters() if "ia3_l" in n]
    assert all(not torch.equal(v, torch.ones_like(v)) for v in vectors)
    assert all(torch.equal(a, b) for a, b in zip(frozen, stored_tensors(model), strict=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])  # eval lets bnb repack 4-bit for its CPU kernel
def test_merge_requantizes_and_unmerge_restores_quantized_tensors(kind, mode):
    model = get_ia3_model(_quantized_net(kind), IA3Config(**CONFIG))
    getattr(model, mode)()
    _vectors_near_one(model)
    with torch.no_grad():
        unmerged = model(_x())
        original = stored_tensors(model)
        model.merge()
        merged = model(_x())
        model.unmerge()
        restored = model(_x())
    assert model.base_model.lin0.base_layer.weight.dtype == (
        torch.int8 if kind == "int8" else torch.uint8
    )
    error = _rel(merged, unmerged)
    print(f"{kind}/{mode}: merged vs unmerged relative error {error:.4f}")
    assert 0 < error < (0.02 if kind == "int8" else 0.2)
    assert torch.equal(restored, unmerged)
    assert all(torch.equal(a, b) for a, b in zip(original, stored_tensors(model), strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_merge_error_on_quantized_base_is_close_to_a_float_merge(kind):
    """Merge on the quantized net vs the same merge on its dequantized float twin."""
    model = get_ia3_model(_quantized_net(kind), IA3Config(**CONFIG))
    _vectors_near_one(model)
    twin = float_net()
    with torch.no_grad():
        for name in ("lin0", "lin1"):
            dense, _ = getattr(model.base_model, name)._read_weight()
            getattr(twin, name).weight.copy_(dense)
    twin = get_ia3_model(twin, IA3Config(**CONFIG))
    _vectors_near_one(twin)
    with torch.no_grad():
        twin.merge()
        model.merge()
        error = _rel(model(_x()), twin(_x()))
    print(f"{kind}: merge on quantized base vs float merge, relative error {error:.4f}")
    assert error < (0.02 if kind == "int8" else 0.2)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_unload_keeps_quantized_layers(kind):
    model = get_ia3_model(_quantized_net(kind), IA3Config(**CONFIG))
    _vectors_near_one(model)
    with torch.no_grad():
        tuned = model(_x())
    base = model.merge_and_unload()
    expected = bnb.nn.Linear8bitLt if kind == "int8" else bnb.nn.Linear4bit
    assert type(base.lin0) is expected and type(base.lin1) is expected
    with torch.no_grad():
        assert _rel(base(_x()), tuned) < (0.02 if kind == "int8" else 0.2)


def test_four_bit_parameters_count_two_values_per_byte():
    model = get_ia3_model(_quantized_net("nf4"), IA3Config(**CONFIG))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 128 + 128  # lin0 output (128, 1), lin1 input (1, 128)
    assert total == 64 * 128 + 128 + 128 * 32 + 32 + trainable
