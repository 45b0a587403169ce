"""IA3Model invariants on every tiny model family: identity, merge, exact unmerge, save/load,
what trains, disabling, deleting and combining adapters, half-precision bases."""

import logging

import pytest
import tiny_models as tm
import torch
from transformers.pytorch_utils import Conv1D

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError, AdapterFileError, MergeError
from ia3engine.layers import IA3Layer
from ia3engine.model import get_ia3_model, load_ia3_model

FAMILIES = ["mlp", "convnet", "bert", "gpt2", "llama", "t5", "opt"]


def _config(family: str, **kwargs) -> IA3Config:
    if family == "mlp":
        kwargs.setdefault("target_modules", ["lin0", "lin1"])
        kwargs.setdefault("feedforward_modules", ["lin1"])
    if family == "convnet":
        kwargs.setdefault("target_modules", ["conv0", "conv1", "conv3d", "lin0"])
        kwargs.setdefault("feedforward_modules", ["conv1", "lin0"])  # conv1 is grouped
    if family == "bert":
        kwargs.setdefault("task_type", "SEQ_CLS")
    return IA3Config(**kwargs)


def _base(family: str, seed: int = 0):
    if family in tm.TRANSFORMERS:
        return tm.TRANSFORMERS[family](seed=seed)
    return getattr(tm, family)(seed=seed)


def _inputs(family: str) -> dict:
    gen = torch.Generator().manual_seed(3)
    if family == "mlp":
        return {"x": torch.randn(4, 10, generator=gen)}
    if family == "convnet":
        return {
            "x": torch.randn(2, 3, 6, 6, generator=gen),
            "volume": torch.randn(2, 1, 4, 4, 4, generator=gen),
        }
    return tm.token_batch(family)


def _out(model, family: str, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**_inputs(family), **kwargs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _model(family: str, init: bool = False, **kwargs):
    return get_ia3_model(_base(family), _config(family, init_ia3_weights=init, **kwargs))


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "ia3_l" not in k}


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_at_init_leaves_outputs_unchanged(family):
    assert torch.equal(_out(_model(family, init=True), family), _out(_base(family), family))


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_output_equals_unmerged_and_merging_twice_is_a_no_op(family, caplog):
    model = _model(family)
    unmerged = _out(model, family)
    assert not torch.allclose(unmerged, _out(_base(family), family))
    model.merge()
    merged = _out(model, family)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    weights = _base_weights(model)
    with caplog.at_level(logging.WARNING):
        model.merge()
    assert "already merged" in caplog.text
    assert all(torch.equal(weights[k], v) for k, v in _base_weights(model).items())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fill", [None, 0.0, 1e-6])
def test_unmerge_restores_weights_exactly(family, fill):
    model = _model(family)
    if fill is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "ia3_l" in name:
                    param.fill_(fill)
    before = _base_weights(model)
    model.merge()
    model.unmerge()
    after = _base_weights(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_the_same_outputs(tmp_path, family):
    model = _model(family)
    model.save_pretrained(tmp_path)
    loaded = load_ia3_model(_base(family), tmp_path)
    assert torch.equal(_out(loaded, family), _out(model, family))


@pytest.mark.parametrize("family", FAMILIES)
def test_only_ia3_vectors_and_saved_modules_train(family):
    model = _model(family)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for key in trainable:
        assert ".ia3_l." in key or ".modules_to_save.default." in key, key
    frozen = [k for k, p in model.named_parameters() if not p.requires_grad]
    assert not any(".ia3_l." in k for k in frozen)


@pytest.mark.parametrize("family", FAMILIES)
def test_three_adam_steps_change_only_adapter_parameters(family):
    model = _model(family, init=True)
    model.train()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        out = model(**_inputs(family))
        logits = out if isinstance(out, torch.Tensor) else out.logits
        logits.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    for key, param in model.named_parameters():
        changed = not torch.equal(before[key], param.detach())
        assert changed == param.requires_grad, key


@pytest.mark.parametrize("family", FAMILIES)
def test_disable_adapters_gives_base_output_also_when_merged(family):
    model = _model(family)
    tuned = _out(model, family)
    base = _out(_base(family), family)
    with model.disable_adapters():
        assert torch.equal(_out(model, family), base)
    model.merge()
    merged_weights = _base_weights(model)
    with model.disable_adapters():
        assert torch.equal(_out(model, family), base)
    assert model.merged_adapters == ["default"]
    assert all(torch.equal(merged_weights[k], v) for k, v in _base_weights(model).items())
    torch.testing.assert_close(_out(model, family), tuned, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["mlp", "llama", "gpt2"])
def test_two_active_adapters_give_the_product_of_their_scales(family):
    model = _model(family)
    model.add_adapter("second", _config(family, init_ia3_weights=False))
    assert model.active_adapters == ["default"]
    assert not any(p.requires_grad for k, p in model.named_parameters() if ".second" in k)
    model.set_adapter(["default", "second"])
    both = _out(model, family)
    # the product, folded into one adapter, gives the same model
    product = _model(family)
    with torch.no_grad():
        for param, other in zip(
            [p for k, p in product.named_parameters() if ".ia3_l.default" in k],
            [p for k, p in model.named_parameters() if ".ia3_l.second" in k],
            strict=True,
        ):
            param.mul_(other)
    torch.testing.assert_close(both, _out(product, family), atol=1e-6, rtol=1e-5)


def test_two_adapters_with_saved_heads_cannot_both_be_active():
    model = _model("bert")
    model.add_adapter("second", _config("bert"))
    with pytest.raises(AdapterError, match="only one"):
        model.set_adapter(["default", "second"])
    assert model.active_adapters == ["default"]  # nothing changed
    assert all(layer.active_adapters == ["default"] for _, layer in model.ia3_layers())


def test_delete_adapter_removes_it_and_restores_plain_layers():
    model = _model("llama")
    model.add_adapter("second", _config("llama", init_ia3_weights=False))
    model.set_adapter("second")
    model.delete_adapter("second")
    assert list(model.peft_config) == ["default"] and model.active_adapters == ["default"]
    assert not any(".second" in k for k in model.state_dict())
    model.delete_adapter("default")
    assert not any(isinstance(m, IA3Layer) for m in model.base_model.modules())
    assert torch.equal(_out(model, "llama"), _out(_base("llama"), "llama"))
    with pytest.raises(AdapterError, match="Unknown adapter"):
        model.delete_adapter("default")


def test_deleting_a_merged_adapter_raises():
    model = _model("mlp")
    model.merge()
    with pytest.raises(AdapterError, match="unmerge"):
        model.delete_adapter("default")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["mlp", "llama"])
def test_half_precision_base_keeps_its_dtype_with_fp32_vectors(family, dtype):
    model = get_ia3_model(_base(family).to(dtype), _config(family, init_ia3_weights=False))
    vectors = [p for k, p in model.named_parameters() if "ia3_l" in k]
    assert all(v.dtype == torch.float32 for v in vectors)
    inputs = _inputs(family)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    out = model(**inputs)
    out = out if isinstance(out, torch.Tensor) else out.logits
    assert out.dtype == dtype
    model.merge()
    assert all(p.dtype == dtype for k, p in model.named_parameters() if "ia3_l" not in k)


def test_grouped_conv_feedforward_merge_matches_unmerged():
    model = _model("convnet")
    assert model.base_model.conv1.base_layer.groups == 2
    assert model.base_model.conv1.feedforward["default"]
    unmerged = _out(model, "convnet")
    model.merge()
    torch.testing.assert_close(_out(model, "convnet"), unmerged, atol=1e-5, rtol=1e-5)


def test_merge_and_unload_returns_bare_base_with_merged_weights():
    model = _model("gpt2")
    tuned = _out(model, "gpt2")
    base = model.merge_and_unload()
    assert isinstance(base.transformer.h[0].attn.c_attn, Conv1D)
    assert not any(isinstance(m, IA3Layer) for m in base.modules())
    assert not any("ia3" in k for k in base.state_dict())
    torch.testing.assert_close(_out(base, "gpt2"), tuned, atol=1e-5, rtol=1e-5)


def test_merge_and_unload_keeps_the_adapters_classifier():
    model = _model("bert")
    with torch.no_grad():
        model.base_model.classifier.modules_to_save["default"].weight.add_(1.0)
    tuned = _out(model, "bert")
    base = model.merge_and_unload()
    assert isinstance(base.classifier, torch.nn.Linear)
    torch.testing.assert_close(_out(base, "bert"), tuned, atol=1e-5, rtol=1e-5)


def test_unload_returns_the_original_model_even_when_merged():
    model = _model("bert")
    model.merge()
    base = model.unload()
    assert torch.equal(_out(base, "bert"), _out(_base("bert"), "bert"))


def test_safe_merge_refuses_a_broken_adapter_and_changes_nothing():
    model = _model("llama")
    layer = model.base_model.model.layers[1].mlp.down_proj
    with torch.no_grad():
        layer.ia3_l["default"][0, 0] = float("nan")
    before = _base_weights(model)
    with pytest.raises(MergeError, match="The adapter default seems to be broken"):
        model.merge(safe_merge=True)
    assert not model.merged_adapters
    assert all(torch.equal(before[k], v) for k, v in _base_weights(model).items())


def test_adapter_names_are_checked():
    model = _model("mlp")
    with pytest.raises(AdapterError, match="already exists"):
        model.add_adapter("default", _config("mlp"))
    with pytest.raises(AdapterError, match="without dots"):
        model.add_adapter("a.b", _config("mlp"))
    with pytest.raises(AdapterError, match="Unknown adapter"):
        model.set_adapter("nope")
    with pytest.raises(AdapterError, match="Unknown adapter"):
        model(**_inputs("mlp"), adapter_names=["nope"] * 4)


def test_weighted_adapter_is_the_weighted_sum_and_starts_inactive():
    model = _model("mlp")
    model.add_adapter("b", _config("mlp", init_ia3_weights=False))
    model.add_weighted_adapter(["default", "b"], [0.5, 1.5], "mix")
    assert model.active_adapters == ["default"]
    layer = model.base_model.lin0
    expected = 0.5 * layer.ia3_l["default"] + 1.5 * layer.ia3_l["b"]
    torch.testing.assert_close(layer.ia3_l["mix"], expected)
    assert not layer.ia3_l["mix"].requires_grad


def test_loading_explains_shape_mismatches(tmp_path):
    # pickled adapter_model.bin files: tests/test_peft_surface.py
    model = _model("mlp")
    model.save_pretrained(tmp_path / "ok")
    wider = torch.nn.Sequential()
    wider.lin0, wider.relu, wider.lin1 = (
        torch.nn.Linear(10, 30),
        torch.nn.ReLU(),
        torch.nn.Linear(30, 2),
    )
    with pytest.raises(AdapterFileError, match=r"lin0.ia3_l.*\(20, 1\).*\(30, 1\).*different base"):
        load_ia3_model(wider, tmp_path / "ok")
    assert not any(isinstance(m, IA3Layer) for m in wider.modules())  # rolled back


def test_print_trainable_parameters_uses_peft_format(capsys):
    model = _model("mlp")
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 20 + 20 and total == 10 * 20 + 20 + 20 * 2 + 2 + 40
    expected = f"trainable params: 40 || all params: {total:,d} || trainable%: {4000 / total:.4f}\n"
    assert capsys.readouterr().out == expected


def test_loading_with_is_trainable_makes_the_vectors_trainable(tmp_path):
    _model("mlp").save_pretrained(tmp_path)
    frozen = load_ia3_model(_base("mlp"), tmp_path)
    trainable = load_ia3_model(_base("mlp"), tmp_path, is_trainable=True)
    assert frozen.get_nb_trainable_parameters()[0] == 0
    assert trainable.get_nb_trainable_parameters()[0] == 40


def test_set_adapter_on_a_merged_model_unmerges_first():
    model = _model("mlp")
    model.add_adapter("b", _config("mlp", init_ia3_weights=False))
    before = _base_weights(model)
    model.merge()
    model.set_adapter("b")
    assert not model.merged_adapters
    assert all(torch.equal(before[k], v) for k, v in _base_weights(model).items())
