"""Merging into bitsandbytes 8-bit / 4-bit bases and merging without a kept copy.

bitsandbytes runs on the CPU here. Its Int8Params.to(device) quantizes only a parameter coming
from the CPU; a weight already on CUDA is wrapped as it is. `cuda_int8_semantics` gives the
CPU that CUDA behaviour, so a merge that leans on .to() to quantize shows its CUDA bug here.
Expected outputs are the dense fp32 computation of the same scaled weights; the tolerances
are the formats' own: int8 rounds each entry to within half a step (row absmax / 127 / 2).
"""

import gc
import weakref

import pytest
import torch
from bnb_nets import Net, float_net, quantize
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ia3engine.config import IA3Config
from ia3engine.errors import MergeError
from ia3engine.layers import IA3Layer
from ia3engine.model import get_ia3_model

bnb = pytest.importorskip("bitsandbytes")

IN, HIDDEN, OUT = 64, 128, 32
CONFIG = dict(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"])
OUTPUT_TOLERANCE = {"int8": 0.02, "nf4": 0.2, "dense": 1e-6}  # relative error of the output
# relative (Frobenius) error of a weight
WEIGHT_TOLERANCE = {"int8": 0.01, "nf4": 0.15, "dense": 1e-6}


def _model(kind: str, adapters=("default",)):
    net = float_net()
    if kind != "dense":
        net = Net(quantize(net.lin0, kind), quantize(net.lin1, kind))
    model = get_ia3_model(net, IA3Config(**CONFIG), adapters[0])
    for name in adapters[1:]:
        model.add_adapter(name, IA3Config(**CONFIG))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=gen))
    return model


def _x():
    return torch.randn(8, IN, generator=torch.Generator().manual_seed(2))


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def cuda_int8_semantics(monkeypatch):
    """Call it once the base is quantized: from then on Int8Params.to behaves as bitsandbytes
    runs it for a weight already on CUDA (no quantizing)."""

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        new = bnb.nn.Int8Params(
            self.data.to(device=device, dtype=dtype, non_blocking=non_blocking),
            requires_grad=self.requires_grad,
            has_fp16_weights=self.has_fp16_weights,
        )
        if self.data.dtype == torch.int8:
            new.CB, new.SCB = new.data, self.SCB
        return new

    return lambda: monkeypatch.setattr(bnb.nn.Int8Params, "to", to)


def _dense_weights(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's weight and bias as fp32, read from the base as it is now."""
    return {
        name: tuple(t.detach().float().clone() for t in layer._read_weight())
        for name, layer in model.ia3_layers()
    }


def _expected(model, dense, adapters) -> tuple[dict, torch.Tensor]:
    """The fp32 weights scaled by `adapters` and the float net's output with them."""
    scaled = {}
    for name, layer in model.ia3_layers():
        weight, bias = dense[name]
        for adapter in adapters:
            vector = layer.ia3_l[adapter].detach()  # (out, 1) or (1, in)
            weight = weight * vector
            if not layer.feedforward[adapter]:
                bias = bias * vector.flatten()
        scaled[name] = (weight, bias)
    twin = float_net()
    with torch.no_grad():
        for name, (weight, bias) in scaled.items():
            getattr(twin, name).weight.copy_(weight)
            getattr(twin, name).bias.copy_(bias)
        return scaled, twin(_x())


def _check_merged(model, kind, scaled, expected_output, rounded_once=True):
    """rounded_once: the merged weights were quantized once from the original ones (a merge
    on merged quantized weights rounds again, so stacked merges carry one rounding each)."""
    with torch.no_grad():
        output = model(_x())
    error = _rel(output, expected_output)
    print(f"{kind}: merged output vs fp32 of the same scaled weights, relative error {error:.4f}")
    assert error < OUTPUT_TOLERANCE[kind]
    for name, layer in model.ia3_layers():
        weight = layer._read_weight()[0].float()
        assert _rel(weight, scaled[name][0]) < WEIGHT_TOLERANCE[kind], name
        if kind == "int8" and rounded_once:  # every entry within half a step of its row
            step = scaled[name][0].abs().amax(dim=1, keepdim=True) / 127
            assert ((weight - scaled[name][0]).abs() <= 0.5 * step * 1.001 + 1e-7).all(), name


def _check_quantized_params(model, kind):
    """The merged weight is a quantized bitsandbytes parameter, on the original's device."""
    for _, layer in model.ia3_layers():
        weight = layer.base_layer.weight
        if kind == "int8":
            assert type(weight) is bnb.nn.Int8Params and weight.dtype == torch.int8
            assert weight.CB is not None and weight.CB.data_ptr() == weight.data_ptr()
            assert weight.SCB.dtype == torch.float32 and weight.SCB.shape == (layer.out_features,)
            assert weight.device == weight.SCB.device == layer.ia3_l["default"].device
        else:
            assert type(weight) is bnb.nn.Params4bit and weight.bnb_quantized
            assert weight.dtype == torch.uint8
            # bitsandbytes gives a parameter that lost its quant_state the layer's one back
            assert layer.base_layer.quant_state is weight.quant_state
        sized = [
            t
            for t in _held_tensors(layer)
            if t.is_floating_point() and t.numel() == layer.in_features * layer.out_features
        ]
        assert sized == [], "a dense float copy of the weight is left on the layer"


def _held_tensors(layer) -> list[torch.Tensor]:
    """Every tensor the layer holds: parameters, buffers, attributes, bitsandbytes' state."""
    found: dict[int, torch.Tensor] = {}

    def add(value, depth=0):
        if isinstance(value, torch.Tensor):
            if value.untyped_storage().data_ptr() not in found:
                found[value.untyped_storage().data_ptr()] = value
            for attr in ("CB", "SCB", "quant_state"):
                add(getattr(value, attr, None), depth + 1)
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item, depth + 1)
        elif isinstance(value, dict):
            for item in value.values():
                add(item, depth + 1)
        elif depth < 4 and type(value).__module__.startswith("bitsandbytes"):
            add(vars(value), depth + 1)  # MatmulLtState, QuantState

    for module in layer.modules():
        add(vars(module))
    return list(found.values())


def _held_bytes(layer) -> int:
    return sum(t.untyped_storage().nbytes() for t in _held_tensors(layer))


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_merge_twice_unmerge_and_merge_again_give_the_scaled_weights(kind, cuda_int8_semantics):
    model = _model(kind, adapters=("default", "b"))
    cuda_int8_semantics()
    model.eval()
    with torch.no_grad():
        unmerged = model(_x())  # a forward first: 8-bit moves CB/SCB into the layer's state
    dense = _dense_weights(model)
    model.merge(["default"])
    _check_quantized_params(model, kind)
    model.merge(["b"])  # a second merge before any forward reads the first one's weights
    _check_quantized_params(model, kind)
    _check_merged(model, kind, *_expected(model, dense, ["default", "b"]), rounded_once=False)

    model.unmerge()
    with torch.no_grad():
        assert torch.equal(model(_x()), unmerged)
    model.merge(["default", "b"])
    _check_quantized_params(model, kind)
    _check_merged(model, kind, *_expected(model, dense, ["default", "b"]))


def test_int8_merge_holds_int8_not_a_dense_weight_until_a_forward(cuda_int8_semantics):
    model = _model("int8")
    cuda_int8_semantics()
    layer = model.base_model.lin0
    before = _held_bytes(layer)
    model.merge()
    # new int8 codes and row scales, plus the old int8 parameter kept for unmerge; a dense
    # fp32 (out, in) weight would be 4 bytes an entry on top
    assert _held_bytes(layer) - before < 2 * layer.in_features * layer.out_features
    _check_quantized_params(model, "int8")


def test_int8_layer_holding_float_weights_merges_and_unmerges():
    """Linear8bitLt with has_fp16_weights=True holds a float weight and no SCB."""
    torch.manual_seed(0)
    float_net = Net(nn.Linear(IN, HIDDEN, bias=False), nn.Linear(HIDDEN, OUT))
    q = bnb.nn.Linear8bitLt(IN, HIDDEN, bias=False, has_fp16_weights=True)
    q.load_state_dict(float_net.lin0.state_dict())
    net = Net(q.to("cpu"), float_net.lin1)
    model = get_ia3_model(net, IA3Config(target_modules=["lin0"]))
    with torch.no_grad():
        model.base_model.lin0.ia3_l["default"].fill_(1.5)
    original = model.base_model.lin0.base_layer.weight.detach().clone()
    model.merge()
    merged = model.base_model.lin0.base_layer.weight
    assert merged.dtype == original.dtype and merged.has_fp16_weights
    torch.testing.assert_close(merged.detach(), original * 1.5)
    model.unmerge()
    assert torch.equal(model.base_model.lin0.base_layer.weight, original)


@pytest.mark.parametrize("kind", ["dense", "int8", "nf4"])
def test_merge_without_keeping_the_original_keeps_no_copy(kind):
    model = _model(kind)
    dense = _dense_weights(model)
    layers = [layer for _, layer in model.ia3_layers()]
    before = [_held_bytes(layer) for layer in layers]
    weights = [weakref.ref(layer.base_layer.weight) for layer in layers]
    model.merge(keep_original=False)
    gc.collect()
    for layer, held in zip(layers, before, strict=True):
        weight_bytes = layer.in_features * layer.out_features * (4 if kind == "dense" else 1)
        assert _held_bytes(layer) - held < weight_bytes / 4  # no copy of the weight
        assert layer.merge_is_final
    if kind != "dense":  # the merge replaces a quantized parameter: the old one is freed
        assert all(ref() is None for ref in weights)
    _check_merged(model, kind, *_expected(model, dense, ["default"]))


@pytest.mark.parametrize("kind", ["dense", "int8", "nf4"])
def test_unmerge_after_a_final_merge_raises_and_changes_nothing(kind):
    model = _model(kind, adapters=("default", "b"))
    model.merge(["default"])  # kept a copy ...
    with torch.no_grad():
        model.merge(["b"], keep_original=False)  # ... which the final merge drops
        merged = model(_x())
    assert all(layer.merge_is_final for _, layer in model.ia3_layers())
    with pytest.raises(MergeError, match=r"merged with keep_original=False.*Reload the base"):
        model.unmerge()
    with pytest.raises(MergeError, match="keep_original=False"):
        model.unload()
    with pytest.raises(MergeError, match="keep_original=False"):
        model.base_model.lin0.unmerge()
    assert model.merged_adapters == ["default", "b"]
    assert all(layer.merged_adapters == ["default", "b"] for _, layer in model.ia3_layers())
    with torch.no_grad():
        assert torch.equal(model(_x()), merged)
    base = model.merge_and_unload()  # a final merge still unloads
    with torch.no_grad():
        assert torch.equal(base(_x()), merged)


def test_final_merge_of_adapters_already_merged_drops_the_copies():
    model = _model("dense")
    model.merge()
    with torch.no_grad():
        merged = model(_x())
    model.merge(keep_original=False)  # nothing new to merge: the merge becomes final
    assert all(layer.merge_is_final for _, layer in model.ia3_layers())
    assert not any(name.startswith("original") for name, _ in model.named_buffers())
    with torch.no_grad():
        assert torch.equal(model(_x()), merged)


def _peak_bytes(fn) -> int:
    """Peak of the CPU memory allocated during fn(), from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def test_dense_merge_and_unload_makes_no_copy_of_the_weights():
    width, depth = 256, 8
    net = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
    names = [str(i) for i in range(depth)]
    model = get_ia3_model(net, IA3Config(target_modules=names, feedforward_modules=[]))
    with torch.no_grad():
        for _, layer in model.ia3_layers():
            layer.ia3_l["default"].fill_(1.5)
        x = torch.randn(4, width)
        expected = model(x)
    targeted = depth * width * width * 4
    peak = _peak_bytes(model.merge_and_unload)
    print(f"merge_and_unload peak {peak} bytes for {targeted} bytes of targeted weights")
    assert peak < targeted / 4  # one layer's scaled weight at a time, not a copy of all
    assert not any(isinstance(m, IA3Layer) for m in net.modules())
    assert not any(name.startswith("original") for name, _ in net.named_buffers())
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected)
