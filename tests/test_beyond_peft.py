"""Where the engine goes beyond PEFT: each test checks behaviour PEFT lacks, and where it is
cheap runs the real `peft` beside ours to show the contrast."""

import logging
import warnings

import pytest
import torch
from tiny_models import TRANSFORMERS, mlp, token_batch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError
from ia3engine.model import get_ia3_model, load_ia3_model

peft = pytest.importorskip("peft")

MLP_BOTH = dict(target_modules=["lin0", "lin1"])


def _logits(model, batch, **kwargs):
    with torch.no_grad():
        out = model(**batch, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _randomize_heads(model, adapter):
    with torch.no_grad():
        for _, module in model.saved_modules():
            for param in module.modules_to_save[adapter].parameters():
                param.normal_()


# 1 ----------------------------------------------------------------------------------------
def test_mixed_adapter_batch_equals_per_row_single_adapter_outputs_with_own_heads():
    model = get_ia3_model(TRANSFORMERS["bert"](), IA3Config(task_type="SEQ_CLS"))
    for name in ("a", "b"):
        model.add_adapter(name, IA3Config(task_type="SEQ_CLS", init_ia3_weights=False))
        _randomize_heads(model, name)
    rows = ["a", "b", "__base__", "default", "b"]
    batch = token_batch("bert", batch=len(rows))
    mixed = _logits(model, batch, adapter_names=rows)
    for row, name in enumerate(rows):
        single = {k: v[row : row + 1] for k, v in batch.items()}
        if name == "__base__":
            with model.disable_adapters():
                expected = _logits(model, single)
        else:
            model.set_adapter(name)
            expected = _logits(model, single)
        torch.testing.assert_close(mixed[row : row + 1], expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(mixed[0], mixed[1])  # different adapters, different heads


def test_mixed_adapter_batch_is_trainable_per_row():
    model = get_ia3_model(TRANSFORMERS["bert"](), IA3Config(task_type="SEQ_CLS"))
    model.add_adapter("b", IA3Config(task_type="SEQ_CLS"))
    batch = token_batch("bert", batch=2)
    model.train()
    for _, layer in model.ia3_layers():
        layer.ia3_l["b"].requires_grad_(True)
    model(**batch, adapter_names=["__base__", "b"]).logits.sum().backward()
    key = model.base_model.bert.encoder.layer[0].attention.self.key
    assert key.ia3_l["b"].grad is not None and key.ia3_l["b"].grad.abs().sum() > 0
    assert key.ia3_l["default"].grad is None  # no row used it


def test_mixed_adapters_in_generate_match_per_row_generation():
    model = get_ia3_model(TRANSFORMERS["llama"](), IA3Config(init_ia3_weights=False))
    model.add_adapter("b", IA3Config(init_ia3_weights=False))
    batch = token_batch("llama", batch=2, length=5)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        mixed = model.generate(**batch, adapter_names=["default", "b"], **kwargs)
        model.set_adapter("b")
        only_b = model.generate(**{k: v[1:] for k, v in batch.items()}, **kwargs)
    assert torch.equal(mixed[1:], only_b)


@pytest.mark.peft_bug  # spec bug #1
def test_peft_ignores_adapter_names_for_ia3():
    theirs = peft.get_peft_model(TRANSFORMERS["llama"](), peft.IA3Config(init_ia3_weights=False))
    theirs.add_adapter("b", peft.IA3Config(init_ia3_weights=False))
    batch = token_batch("llama", batch=2)
    routed = _logits(theirs, batch, adapter_names=["default", "b"])
    theirs.set_adapter("b")
    assert not torch.allclose(routed[1], _logits(theirs, batch)[1])  # row 1 did not get "b"


# 2 ----------------------------------------------------------------------------------------
@pytest.mark.peft_bug  # spec bug #3
@pytest.mark.parametrize("fill", [0.0, 1e-6])
def test_unmerge_is_exact_at_and_near_zero_where_peft_is_not(fill):
    ours = get_ia3_model(mlp(), IA3Config(**MLP_BOTH, feedforward_modules=["lin1"]))
    theirs = peft.get_peft_model(mlp(), peft.IA3Config(**MLP_BOTH, feedforward_modules=["lin1"]))
    original = mlp().lin0.weight
    errors = {}
    for label, model in (("ours", ours), ("peft", theirs)):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "ia3_l" in name:
                    param.fill_(fill)
        model.merge_adapter() if label == "peft" else model.merge()
        model.unmerge_adapter() if label == "peft" else model.unmerge()
        restored = model.base_model.model.lin0 if label == "peft" else model.base_model.lin0
        weight = restored.base_layer.weight
        errors[label] = ((weight - original).norm() / original.norm()).item()
        if label == "ours":
            assert torch.equal(weight, original)
    print(
        f"unmerge relative weight error at l={fill}: ours {errors['ours']}, PEFT {errors['peft']}"
    )
    assert errors["ours"] == 0.0 and errors["peft"] > 1e-3


# 3 ----------------------------------------------------------------------------------------
@pytest.mark.peft_bug  # spec bug #8
def test_feedforward_mode_is_per_adapter_and_round_trips(tmp_path):
    ff = IA3Config(**MLP_BOTH, feedforward_modules=["lin1"], init_ia3_weights=False)
    out = IA3Config(**MLP_BOTH, feedforward_modules=[], init_ia3_weights=False)
    model = get_ia3_model(mlp(), ff)
    model.add_adapter("out", out)
    lin1 = model.base_model.lin1
    assert lin1.feedforward == {"default": True, "out": False}
    assert lin1.ia3_l["default"].shape == (1, 20) and lin1.ia3_l["out"].shape == (2, 1)
    x = torch.randn(4, 10)
    expected = {}
    for name in ("default", "out"):  # each adapter behaves as if it were alone on the model
        model.set_adapter(name)
        alone = get_ia3_model(mlp(), ff if name == "default" else out)
        with torch.no_grad():
            for (_, mine), (_, single) in zip(
                sorted((n, layer) for n, layer in model.ia3_layers()),
                sorted((n, layer) for n, layer in alone.ia3_layers()),
                strict=True,
            ):
                single.ia3_l["default"].copy_(mine.ia3_l[name])
        expected[name] = _logits(model, {"x": x})
        torch.testing.assert_close(expected[name], _logits(alone, {"x": x}))
    model.save_pretrained(tmp_path)
    loaded = load_ia3_model(mlp(), tmp_path)
    loaded.load_adapter(tmp_path / "out", "out")
    for name in ("default", "out"):
        loaded.set_adapter(name)
        assert torch.equal(_logits(loaded, {"x": x}), expected[name])
    # PEFT: the mode belongs to the layer, so the second adapter gets the first one's shape
    theirs = peft.get_peft_model(mlp(), peft.IA3Config(**MLP_BOTH, feedforward_modules=["lin1"]))
    theirs.add_adapter("out", peft.IA3Config(**MLP_BOTH, feedforward_modules=[]))
    assert theirs.base_model.model.lin1.ia3_l["out"].shape != (2, 1)


# 4 ----------------------------------------------------------------------------------------
@pytest.mark.peft_bug  # spec bug #7
def test_all_linear_adapter_reloads_in_ours_and_peft_where_peft_cannot_reload_its_own(tmp_path):
    batch = token_batch("llama")
    ours = get_ia3_model(
        TRANSFORMERS["llama"](), IA3Config(target_modules="all-linear", init_ia3_weights=False)
    )
    ours.save_pretrained(tmp_path / "ours")
    reloaded = load_ia3_model(TRANSFORMERS["llama"](), tmp_path / "ours")
    assert torch.equal(_logits(reloaded, batch), _logits(ours, batch))
    theirs_of_ours = peft.PeftModel.from_pretrained(TRANSFORMERS["llama"](), tmp_path / "ours")
    torch.testing.assert_close(
        _logits(theirs_of_ours, batch), _logits(ours, batch), atol=1e-6, rtol=0
    )

    theirs = peft.get_peft_model(
        TRANSFORMERS["llama"](), peft.IA3Config(target_modules="all-linear", init_ia3_weights=False)
    )
    theirs.save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(ValueError, match="subset"):
        peft.PeftModel.from_pretrained(TRANSFORMERS["llama"](), str(tmp_path / "peft"))
    ours_of_theirs = load_ia3_model(TRANSFORMERS["llama"](), tmp_path / "peft")
    torch.testing.assert_close(
        _logits(ours_of_theirs, batch), _logits(theirs, batch), atol=1e-6, rtol=0
    )


# 5 ----------------------------------------------------------------------------------------
@pytest.mark.peft_bug  # spec bug #13
def test_weighted_mix_treats_untouched_modules_as_identity(caplog):
    only0 = dict(target_modules=["lin0"], feedforward_modules=[], init_ia3_weights=False)
    only1 = dict(target_modules=["lin1"], feedforward_modules=[], init_ia3_weights=False)
    x = {"x": torch.randn(4, 10)}
    ours = get_ia3_model(mlp(), IA3Config(**only0))
    ours.add_adapter("b", IA3Config(**only1))
    alone = _logits(ours, x)  # "default" alone: lin1 unscaled
    ours.add_weighted_adapter(["default", "b"], [1.0, 0.0], "mix")
    ours.set_adapter("mix")
    torch.testing.assert_close(_logits(ours, x), alone)  # b weighs 0, default's lin1 is 1
    with pytest.raises(AdapterError, match="already exists"):
        ours.add_weighted_adapter(["default", "b"], [0.5, 0.5], "mix")

    theirs = peft.get_peft_model(mlp(), peft.IA3Config(**only0))
    theirs.add_adapter("b", peft.IA3Config(**only1))
    theirs_alone = _logits(theirs, x)
    theirs.add_weighted_adapter(["default", "b"], [1.0, 0.0], "mix")
    theirs.set_adapter("mix")
    theirs_mix = _logits(theirs, x)
    assert not torch.allclose(theirs_mix, theirs_alone)  # PEFT zeroes lin1 instead
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        theirs.add_weighted_adapter(["default", "b"], [0.5, 0.5], "mix")  # PEFT: silent no-op
    assert caplog.records == [] and warned == []  # no error, no warning, no log line
    assert torch.equal(_logits(theirs, x), theirs_mix)  # and "mix" is still the first mix


# 6 ----------------------------------------------------------------------------------------
def _minilm(path, bits=None):
    if bits is None:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    quantization = (
        dict(load_in_8bit=True)
        if bits == 8
        else dict(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    )
    config = BitsAndBytesConfig(**quantization, llm_int8_skip_modules=["classifier"])
    return AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, device_map="cpu", quantization_config=config
    )


def _same_random_vectors(*models):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layers in zip(*(m.ia3_layers() for m in models), strict=True):
            vector = 1 + 0.2 * torch.randn(layers[0][1].ia3_l["default"].shape, generator=gen)
            for _, layer in layers:
                layer.ia3_l["default"].copy_(vector)


@pytest.mark.peft_bug  # spec bug #2
@pytest.mark.parametrize("bits", [8, 4])
def test_merge_into_quantized_minilm_where_peft_refuses(minilm_path, bits):
    texts = ["IA3 scales activations.", "A second, somewhat longer sentence for the batch."]
    batch = AutoTokenizer.from_pretrained(minilm_path)(texts, return_tensors="pt", padding=True)

    def error(model, reference):  # relative error of the last hidden states
        with torch.no_grad():
            a, b = (
                m(**batch, output_hidden_states=True).hidden_states[-1] for m in (model, reference)
            )
        return ((a - b).norm() / b.norm()).item()

    ours = get_ia3_model(_minilm(minilm_path, bits), IA3Config(task_type="SEQ_CLS")).eval()
    reference = get_ia3_model(_minilm(minilm_path), IA3Config(task_type="SEQ_CLS"))
    _same_random_vectors(ours, reference)
    quant_error = error(ours, reference)  # quantization alone, unmerged
    ours.merge()
    reference.merge()
    merge_error = error(ours, reference)
    print(
        f"{bits}-bit MiniLM: unmerged quantized vs float {quant_error:.4f}, "
        f"merged quantized vs float merge {merge_error:.4f}"
    )
    assert merge_error < 2 * quant_error + 0.02
    assert merge_error < (0.15 if bits == 8 else 0.6)

    base = ours.unload()  # the quantized base, unchanged, for PEFT's turn
    theirs = peft.get_peft_model(base, peft.IA3Config(task_type="SEQ_CLS"))
    with pytest.raises(
        ValueError, match=f"Cannot merge ia3 layers when the model is loaded in {bits}-bit"
    ):
        theirs.merge_and_unload()


def test_mixed_batch_refuses_to_train_under_gradient_checkpointing():
    # checkpointed blocks would recompute outside the row routing and use the wrong vectors
    model = get_ia3_model(TRANSFORMERS["llama"](), IA3Config(init_ia3_weights=False))
    model.add_adapter("other", IA3Config(init_ia3_weights=False))
    model.base_model.gradient_checkpointing_enable()
    model.train()
    batch = token_batch("llama", batch=2)
    with pytest.raises(AdapterError, match="gradient checkpointing"):
        model(**batch, adapter_names=["default", "other"])
    with torch.no_grad():  # inference recomputes nothing, so it stays allowed
        model(**batch, adapter_names=["default", "other"])
