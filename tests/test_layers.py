"""IA3 layer wrappers on their own: forward math, merge, exact unmerge, dtypes, mixed rows."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ia3engine.errors import AdapterError, MergeError, UnsupportedLayerError
from ia3engine.layers import IA3Conv, IA3Linear
from ia3engine.routing import RowRouting, route_rows
from ia3engine.wrappers import wrap_layer


def _base(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A fresh base layer and an input for it."""
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(6, 5), torch.randn(3, 4, 6)
    if kind == "conv1d":
        layer = Conv1D(5, 6)  # nf=5 outputs, nx=6 inputs; weight (6, 5)
        nn.init.normal_(layer.bias)
        return layer, torch.randn(3, 4, 6)
    if kind == "conv2d":
        return nn.Conv2d(4, 6, 3, padding=1), torch.randn(3, 4, 5, 5)
    if kind == "conv2d_grouped":
        return nn.Conv2d(4, 6, 3, padding=1, groups=2), torch.randn(3, 4, 5, 5)
    if kind == "conv3d":
        return nn.Conv3d(2, 3, 3, padding=1), torch.randn(2, 2, 4, 4, 4)
    raise ValueError(kind)


KINDS = ["linear", "conv1d", "conv2d", "conv2d_grouped", "conv3d"]


def _wrapped(kind, feedforward=False, init_ones=False, names=("a",)):
    base, x = _base(kind)
    reference = _base(kind)[0]  # an untouched twin with the same weights
    layer = wrap_layer(base)
    for name in names:
        layer.add_adapter(name, feedforward, init_ones=init_ones)
    layer.active_adapters = [names[0]]
    return layer, reference, x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feedforward", [False, True])
def test_vectors_at_init_leave_the_layer_unchanged(kind, feedforward):
    layer, reference, x = _wrapped(kind, feedforward, init_ones=True)
    assert torch.equal(layer(x), reference(x))


@pytest.mark.parametrize("kind", KINDS)
def test_output_mode_scales_output_including_bias(kind):
    layer, reference, x = _wrapped(kind, feedforward=False)
    vector = layer.ia3_l["a"].detach().flatten()
    channel_last = kind in ("linear", "conv1d")
    shape = (-1,) if channel_last else (-1,) + (1,) * (x.dim() - 2)
    expected = reference(x) * vector.view(shape)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_feedforward_mode_scales_input(kind):
    layer, reference, x = _wrapped(kind, feedforward=True)
    vector = layer.ia3_l["a"].detach().flatten()
    channel_last = kind in ("linear", "conv1d")
    shape = (-1,) if channel_last else (-1,) + (1,) * (x.dim() - 2)
    torch.testing.assert_close(layer(x), reference(x * vector.view(shape)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("kind", "ff_shape", "out_shape"),
    [
        ("linear", (1, 6), (5, 1)),
        ("conv1d", (1, 6), (5, 1)),
        ("conv2d", (1, 4, 1, 1), (1, 6, 1, 1)),
        ("conv3d", (1, 2, 1, 1, 1), (1, 3, 1, 1, 1)),
    ],
)
def test_vector_shapes_follow_peft(kind, ff_shape, out_shape):
    layer = wrap_layer(_base(kind)[0])
    layer.add_adapter("ff", True)
    layer.add_adapter("out", False)
    assert tuple(layer.ia3_l["ff"].shape) == ff_shape
    assert tuple(layer.ia3_l["out"].shape) == out_shape
    assert layer.ia3_l["ff"].dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feedforward", [False, True])
def test_merged_output_equals_unmerged_output(kind, feedforward):
    layer, _, x = _wrapped(kind, feedforward)
    before = layer(x)
    assert layer.merge(["a"]) == ["a"]
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fill", [0.0, 1e-6, None])
def test_unmerge_restores_weights_exactly(kind, fill):
    layer, reference, x = _wrapped(kind, feedforward=False, names=("a", "b"))
    layer.add_adapter("ff", True, init_ones=False)
    if fill is not None:
        with torch.no_grad():
            layer.ia3_l["a"].fill_(fill)
    layer.merge(["a", "ff"])
    layer.merge(["b"])
    assert layer.unmerge()
    assert torch.equal(layer.base_layer.weight, reference.weight)
    assert torch.equal(layer.base_layer.bias, reference.bias)
    assert not layer.merged_adapters
    assert not layer.unmerge()  # nothing left to do


def test_merging_twice_is_a_no_op():
    layer, _, x = _wrapped("linear")
    layer.merge(["a"])
    weight = layer.base_layer.weight.clone()
    assert layer.merge(["a"]) == []
    assert torch.equal(layer.base_layer.weight, weight)
    assert layer.merged_adapters == ["a"]


def test_merged_layer_ignores_vectors_in_forward():
    layer, _, x = _wrapped("linear")
    layer.merge(["a"])
    assert torch.equal(layer(x), layer.base_layer(x))


def test_grouped_conv_feedforward_merge_matches_input_scaling():
    layer, reference, x = _wrapped("conv2d_grouped", feedforward=True)
    vector = layer.ia3_l["a"].detach()  # (1, 4, 1, 1)
    layer.merge(["a"])
    torch.testing.assert_close(layer(x), reference(x * vector), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("where", ["weight", "bias"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_safe_merge_refuses_non_finite_weight_or_bias(where, bad):
    layer, reference, _ = _wrapped("linear")
    with torch.no_grad():
        if where == "bias":
            layer.base_layer.bias[0] = 3e38  # overflows only in the bias
            reference.bias.copy_(layer.base_layer.bias)
            layer.ia3_l["a"].fill_(10.0)
        else:
            layer.ia3_l["a"][0, 0] = bad
    with pytest.raises(MergeError, match="NaNs detected in the merged weights. The adapter a"):
        layer.merge(["a"], safe_merge=True)
    # nothing committed: weight and bias untouched, nothing recorded as merged
    assert torch.equal(layer.base_layer.weight, reference.weight)
    assert torch.equal(layer.base_layer.bias, reference.bias)
    assert layer.merged_adapters == []


def test_two_active_adapters_multiply_even_with_different_modes():
    layer, reference, x = _wrapped("linear", names=("a", "b"))
    layer.add_adapter("ff", True, init_ones=False)
    layer.active_adapters = ["a", "b", "ff"]
    a, b, ff = (layer.ia3_l[n].detach().flatten() for n in ("a", "b", "ff"))
    torch.testing.assert_close(layer(x), reference(x * ff) * a * b, atol=1e-6, rtol=1e-6)


def test_active_adapter_missing_from_layer_is_skipped():
    layer, reference, x = _wrapped("linear", init_ones=True)
    layer.active_adapters = ["a", "elsewhere"]
    assert torch.equal(layer(x), reference(x))


def test_disabled_layer_returns_base_output():
    layer, reference, x = _wrapped("linear")
    layer.disabled = True
    assert torch.equal(layer(x), reference(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("feedforward", [False, True])
def test_half_precision_base_keeps_its_dtype_with_fp32_vectors(dtype, feedforward):
    layer, reference, x = _wrapped("linear", feedforward)
    layer.base_layer.to(dtype)
    reference.to(dtype)
    assert layer.ia3_l["a"].dtype == torch.float32
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    vector = layer.ia3_l["a"].detach().flatten()
    x32 = x * vector if feedforward else x
    expected = reference.float()(x32.to(dtype).float())
    expected = expected if feedforward else expected * vector
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.02)
    layer.merge(["a"])
    assert layer.base_layer.weight.dtype == dtype
    assert layer(x.to(dtype)).dtype == dtype


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_mixed_rows_match_per_row_single_adapter_outputs(kind):
    layer, _, x = _wrapped(kind, names=("a", "b"))
    layer.add_adapter("ff", True, init_ones=False)
    names = ["b", "__base__", "a", "ff"][: x.shape[0]]
    with route_rows(RowRouting.from_names(names)):
        mixed = layer(x)
    for row, name in enumerate(names):
        if name == "__base__":
            layer.disabled = True
        layer.active_adapters = [name]
        single = layer(x[row : row + 1])
        layer.disabled = False
        torch.testing.assert_close(mixed[row : row + 1], single, atol=1e-6, rtol=1e-6)


def test_a_forward_reads_only_the_vectors_its_rows_use():
    layer, _, x = _wrapped("linear", names=("a", "b", "c", "d"))
    read = []
    layer.ia3_l.register_forward_hook(lambda module, args, out: read.append(sorted(out)))
    layer(x)  # active adapter: a
    with route_rows(RowRouting.from_names(["b", "__base__", "d"])):
        layer(x)
    assert read == [["a"], ["b", "d"]]
    assert sorted(layer.ia3_l()) == ["a", "b", "c", "d"]  # no names: the whole table


def test_mixed_rows_expand_for_beams():
    layer, _, x = _wrapped("linear", names=("a", "b"))
    routing = RowRouting.from_names(["a", "b"], expansion=2)
    doubled = x[:2].repeat_interleave(2, dim=0)  # generate() with 2 beams per row
    with route_rows(routing):
        y = layer(doubled)
    layer.active_adapters = ["b"]
    torch.testing.assert_close(y[2:], layer(doubled[2:]))
    with route_rows(routing), pytest.raises(AdapterError, match="one adapter name per row"):
        layer(x)  # 3 rows for 2 names


def test_mixed_rows_on_a_merged_layer_raise():
    layer, _, x = _wrapped("linear")
    layer.merge(["a"])
    with route_rows(RowRouting.from_names(["a"] * 3)), pytest.raises(AdapterError, match="unm"):
        layer(x)


def test_mixed_rows_carry_gradients_to_each_rows_vector():
    layer, _, x = _wrapped("linear", names=("a", "b"))
    with route_rows(RowRouting.from_names(["a", "a", "__base__"])):
        layer(x).sum().backward()
    assert layer.ia3_l["a"].grad is not None and layer.ia3_l["a"].grad.abs().sum() > 0
    assert layer.ia3_l["b"].grad is None


def test_deleting_a_merged_adapter_raises_and_unmerged_delete_works():
    layer, _, _ = _wrapped("linear", names=("a", "b"))
    layer.active_adapters = ["a", "b"]
    layer.merge(["a"])
    with pytest.raises(AdapterError, match="unmerge"):
        layer.delete_adapter("a")
    layer.delete_adapter("b")
    assert "b" not in layer.ia3_l and layer.active_adapters == ["a"]


def test_layer_types_dispatch_and_unsupported_layer_raises():
    assert isinstance(wrap_layer(nn.Linear(2, 2)), IA3Linear)
    assert wrap_layer(Conv1D(2, 3)).transposed
    assert isinstance(wrap_layer(nn.Conv3d(1, 1, 1)), IA3Conv)
    with pytest.raises(UnsupportedLayerError, match="Embedding"):
        wrap_layer(nn.Embedding(3, 2), "emb")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
@pytest.mark.parametrize("feedforward", [False, True])
@pytest.mark.parametrize("rows", [1, 64])  # 64 rows: a Linear folds the scales into W
def test_no_grad_inference_path_matches_autograd_path(kind, dtype, feedforward, rows):
    layer, _, x = _wrapped(kind, feedforward, names=("a", "b"))
    layer.add_adapter("c", not feedforward, init_ones=False)
    layer.active_adapters = ["a", "b", "c"]
    layer.base_layer.to(dtype)
    x = torch.randn(rows, *x.shape[1:]).to(dtype)
    with_grad = layer(x)
    with torch.no_grad():
        without = layer(x)
    assert without.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(without, with_grad.detach(), atol=tolerance, rtol=tolerance)


def test_folding_is_used_only_for_plain_linear_without_grad():
    layer, _, x = _wrapped("linear")
    big = torch.randn(64, 6)
    scales = layer._active_scales()
    with torch.no_grad():
        assert layer._fold_is_cheaper(big, *scales)
        assert not layer._fold_is_cheaper(big[:1], *scales)  # one row: scaling y is cheaper
    assert not layer._fold_is_cheaper(big, *scales)  # autograd on
    conv1d, _, _ = _wrapped("conv1d")
    with torch.no_grad():
        assert not conv1d._fold_is_cheaper(big, *conv1d._active_scales())
