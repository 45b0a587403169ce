"""The PeftModel surface on IA3Model, each piece checked against what PEFT (the oracle) does.

Attribute forwarding, disable_adapter, merge_adapter/unmerge_adapter, active_adapter(s),
targeted_module_names, set_requires_grad, save_pretrained's options (pickle files, the model
card, selected adapters, the main process), merge_and_unload's signature, "ALL-LINEAR" in any
case, legacy adapter_model.bin files, and the weighted-mix example of docs/engine-api.md.
"""

import os

import pytest
import tiny_models as tm
import torch
import yaml
from tiny_models import token_batch

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError, AdapterFileError
from ia3engine.model import get_ia3_model, load_ia3_model

peft = pytest.importorskip("peft")

NAME = "org/tiny-llama"


def _llama(name: str = ""):
    model = tm.llama()
    model.name_or_path = model.config._name_or_path = name  # as from_pretrained sets them
    return model


def _ours(base=None, **config):
    config.setdefault("task_type", "CAUSAL_LM")
    return get_ia3_model(base if base is not None else _llama(), IA3Config(**config))


def _peft(base=None, **config):
    config.setdefault("task_type", "CAUSAL_LM")
    return peft.get_peft_model(base if base is not None else _llama(), peft.IA3Config(**config))


def _logits(model, name: str = "llama") -> torch.Tensor:
    with torch.no_grad():
        return model(**token_batch(name)).logits


def _trainable(model, prefix: str) -> set[str]:
    return {n.removeprefix(prefix) for n, p in model.named_parameters() if p.requires_grad}


def _front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


# ---- the base model's attributes ----------------------------------------------------------
def test_base_model_attributes_are_reached_through_the_wrapper():
    ours, theirs = _ours(), _peft()
    base = ours.base_model
    assert ours.config is base.config and ours.config.model_type == theirs.config.model_type
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.device == theirs.device
    assert ours.generation_config is base.generation_config
    assert ours.get_input_embeddings() is base.model.embed_tokens
    assert ours.get_output_embeddings() is base.lm_head
    assert ours.num_parameters() == base.num_parameters()
    with pytest.raises(AttributeError, match=r"LlamaForCausalLM.*'no_such_thing'"):
        ours.no_such_thing  # noqa: B018


def test_gradient_checkpointing_enabled_through_the_wrapper_gives_the_same_gradients():
    def gradients(model, checkpointing: bool) -> dict[str, torch.Tensor]:
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        batch = token_batch("llama")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain = gradients(_ours(init_ia3_weights=False), checkpointing=False)
    model = _ours(init_ia3_weights=False)
    checkpointed = gradients(model, checkpointing=True)
    assert model.is_activation_checkpointing  # read from the base model too
    assert plain.keys() == checkpointed.keys() and len(plain) == 6
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)


# ---- adapters: which are active, what they target, what trains ----------------------------
def test_disable_adapter_runs_the_base_model_like_peft():
    ours, theirs = _ours(init_ia3_weights=False), _peft(init_ia3_weights=False)
    tuned = _logits(ours)
    torch.testing.assert_close(tuned, _logits(theirs), atol=1e-6, rtol=0)
    with ours.disable_adapter(), theirs.disable_adapter():
        torch.testing.assert_close(_logits(ours), _logits(theirs), atol=1e-6, rtol=0)
        torch.testing.assert_close(_logits(ours), _logits(_llama()), atol=0, rtol=0)
    torch.testing.assert_close(_logits(ours), tuned, atol=0, rtol=0)


def test_active_adapter_and_targeted_module_names_match_peft():
    ours, theirs = _ours(), _peft()
    for model in (ours, theirs):
        model.add_adapter("other", type(model.peft_config["default"])(task_type="CAUSAL_LM"))
    assert ours.active_adapter == theirs.active_adapter == "default"
    assert ours.active_adapters == theirs.active_adapters == ["default"]
    ours.set_adapter("other")
    theirs.set_adapter("other")
    assert ours.active_adapter == theirs.active_adapter == "other"
    assert ours.active_adapters == theirs.active_adapters == ["other"]
    assert ours.targeted_module_names == list(dict.fromkeys(theirs.targeted_module_names))
    assert len(ours.targeted_module_names) == 6
    ours.set_adapter(["default", "other"])
    assert ours.active_adapter == ours.active_adapters == ["default", "other"]


def test_set_requires_grad_matches_peft_for_vectors_and_saved_heads():
    def pair():
        ours = get_ia3_model(tm.bert(), IA3Config(task_type="SEQ_CLS"))
        theirs = peft.get_peft_model(tm.bert(), peft.IA3Config(task_type="SEQ_CLS"))
        for model, config in ((ours, IA3Config), (theirs, peft.IA3Config)):
            model.add_adapter("other", config(task_type="SEQ_CLS"))
        return ours, theirs

    ours, theirs = pair()
    steps = [(["other"], True), ("default", False), (["default", "other"], True)]
    for names, flag in steps:
        ours.set_requires_grad(names, requires_grad=flag)
        theirs.set_requires_grad(names, requires_grad=flag)
        trainable = _trainable(ours, "base_model.")
        assert trainable == _trainable(theirs, "base_model.model."), (names, flag)
    assert "classifier.modules_to_save.other.weight" in trainable
    assert "bert.encoder.layer.0.attention.self.key.ia3_l.other" in trainable
    with pytest.raises(AdapterError, match="Unknown adapter"):
        ours.set_requires_grad("missing")


# ---- merging ------------------------------------------------------------------------------
def test_merge_adapter_and_unmerge_adapter_match_peft():
    ours = _ours(init_ia3_weights=False)
    before = {k: v.clone() for k, v in ours.base_model.state_dict().items()}
    tuned = _logits(ours)
    ours.merge_adapter()
    assert ours.merged_adapters == ["default"]
    torch.testing.assert_close(_logits(ours), tuned, atol=1e-5, rtol=1e-5)
    weight = "model.layers.0.self_attn.k_proj.base_layer.weight"
    assert not torch.equal(ours.base_model.state_dict()[weight], before[weight])
    ours.unmerge_adapter()
    assert not ours.merged_adapters
    assert all(torch.equal(before[k], v) for k, v in ours.base_model.state_dict().items())


def test_merge_and_unload_takes_peft_arguments_by_position_and_by_name(tmp_path):
    ours, theirs = _ours(init_ia3_weights=False), _peft(init_ia3_weights=False)
    for model, config in ((ours, IA3Config), (theirs, peft.IA3Config)):
        model.add_adapter("topic", config(task_type="CAUSAL_LM", init_ia3_weights=False))
    theirs.save_pretrained(str(tmp_path))  # ours gets PEFT's random vectors
    ours.load_adapter(tmp_path, "peft_default")
    ours.load_adapter(tmp_path / "topic", "peft_topic")
    merged_theirs = theirs.merge_and_unload(
        False, True, ["topic"]
    )  # progressbar, safe_merge, names
    merged_ours = ours.merge_and_unload(False, True, ["peft_topic"])
    torch.testing.assert_close(_logits(merged_ours), _logits(merged_theirs), atol=1e-5, rtol=1e-5)
    again = _ours(init_ia3_weights=False).merge_and_unload(progressbar=True, safe_merge=False)
    assert not any("ia3" in key for key in again.state_dict())


# ---- files --------------------------------------------------------------------------------
def test_pickle_save_writes_peft_bin_that_peft_and_we_load(tmp_path):
    ours = _ours(init_ia3_weights=False)
    ours.save_pretrained(tmp_path / "ours", safe_serialization=False)
    _peft().save_pretrained(str(tmp_path / "peft"), safe_serialization=False)
    for folder in ("ours", "peft"):
        assert not (tmp_path / folder / "adapter_model.safetensors").exists()
    ours_keys = set(torch.load(tmp_path / "ours" / "adapter_model.bin", weights_only=True))
    peft_keys = set(torch.load(tmp_path / "peft" / "adapter_model.bin", weights_only=True))
    assert ours_keys == peft_keys and len(ours_keys) == 6
    tuned = _logits(ours)
    theirs = peft.PeftModel.from_pretrained(_llama(), str(tmp_path / "ours"))
    torch.testing.assert_close(_logits(theirs), tuned, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(load_ia3_model(_llama(), tmp_path / "ours")), tuned)


class _RunsCode:
    """Unpickling this would call os.makedirs: what a hostile adapter_model.bin can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_legacy_bin_from_peft_loads_and_a_bin_with_code_is_refused_unrun(tmp_path):
    theirs = _peft(init_ia3_weights=False)
    theirs.save_pretrained(str(tmp_path / "legacy"), safe_serialization=False)
    ours = load_ia3_model(_llama(), tmp_path / "legacy")
    torch.testing.assert_close(_logits(ours), _logits(theirs), atol=1e-6, rtol=0)

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "adapter_config.json").write_bytes(
        (tmp_path / "legacy" / "adapter_config.json").read_bytes()
    )
    marker = tmp_path / "code-ran"
    torch.save({"x": _RunsCode(str(marker))}, hostile / "adapter_model.bin")
    with pytest.raises(AdapterFileError, match="weights-only.*safetensors"):
        load_ia3_model(_llama(), hostile)
    assert not marker.exists()


def test_model_card_carries_peft_metadata_and_an_existing_card_is_kept(tmp_path):
    ours = _ours(base=_llama(NAME))
    ours.add_adapter("other", IA3Config(task_type="CAUSAL_LM"))
    ours.save_pretrained(tmp_path / "ours", selected_adapters=["other"])
    _peft(base=_llama(NAME)).save_pretrained(str(tmp_path / "peft"))
    assert (tmp_path / "ours" / "other" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "ours" / "adapter_model.safetensors").exists()
    card = _front_matter(tmp_path / "ours" / "README.md")
    peft_card = _front_matter(tmp_path / "peft" / "README.md")
    assert peft_card["base_model"] == NAME
    for key, value in peft_card.items():
        if key == "tags":
            assert set(value) <= set(card["tags"])
        else:
            assert card[key] == value, key

    mlp_folder = tmp_path / "mlp"
    get_ia3_model(
        tm.mlp(), IA3Config(target_modules=["lin0"], feedforward_modules=[])
    ).save_pretrained(mlp_folder)
    assert _front_matter(mlp_folder / "README.md")["library_name"] == "peft"
    assert "base_model" not in _front_matter(mlp_folder / "README.md")

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my own card\n")
    ours.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "README.md").read_text() == "my own card\n"


def test_save_pretrained_writes_only_on_the_main_process_and_refuses_bad_targets(tmp_path):
    ours = _ours()
    ours.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert not (tmp_path / "rank1").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdapterFileError, match="needs a folder"):
        ours.save_pretrained(tmp_path / "file")
    with pytest.raises(AdapterError, match="Unknown adapter"):
        ours.save_pretrained(tmp_path / "out", selected_adapters=["missing"])


# ---- config -------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["ALL-LINEAR", "All-Linear"])
def test_all_linear_is_accepted_in_any_case_like_peft(tmp_path, spelling):
    ours = _ours(target_modules=spelling)
    theirs = _peft(target_modules=spelling)
    assert sorted(ours.targeted_module_names) == sorted(theirs.targeted_module_names)
    assert len(ours.targeted_module_names) == 14  # 7 projections x 2 layers, no lm_head
    ours.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(_llama(), str(tmp_path))
    torch.testing.assert_close(_logits(loaded), _logits(ours), atol=1e-6, rtol=0)


# ---- weighted mixing: the worked example in docs/engine-api.md ----------------------------
def _mix_example(in_peft: bool = False):
    """docs/engine-api.md: adapter style scales lin0 (by 2) and lin1's input (by 3), topic only
    lin0 (by 0.5); mixed with weights [0.5, 1.0]. Returns the model and its two layers."""
    config_class = peft.IA3Config if in_peft else IA3Config
    config = config_class(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"])
    if in_peft:
        model = peft.get_peft_model(tm.mlp(), config, adapter_name="style")
        layers = model.base_model.model
    else:
        model = get_ia3_model(tm.mlp(), config, "style")
        layers = model.base_model
    model.add_adapter("topic", config_class(target_modules=["lin0"], feedforward_modules=[]))
    with torch.no_grad():
        layers.lin0.ia3_l["style"].fill_(2.0)
        layers.lin1.ia3_l["style"].fill_(3.0)
        layers.lin0.ia3_l["topic"].fill_(0.5)
    model.add_weighted_adapter(["style", "topic"], [0.5, 1.0], "mix")
    return model, layers.lin0, layers.lin1


def test_the_documented_weighted_mix_example_holds():
    model, lin0, lin1 = _mix_example()
    assert torch.all(lin0.ia3_l["mix"] == 1.5)  # 0.5 * 2 + 1.0 * 0.5
    assert torch.all(lin1.ia3_l["mix"] == 2.5)  # 0.5 * 3 + 1.0 * 1 (topic is absent: 1)
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    model.set_adapter("mix")
    with torch.no_grad():
        mixed = model(x)
        with model.disable_adapter():
            base = model(x)
    bias = lin1.base_layer.bias
    torch.testing.assert_close(mixed - bias, 3.75 * (base - bias))  # 1.5 * 2.5, relu between

    for name in ("fresh_a", "fresh_b"):  # untrained: all ones
        model.add_adapter(name, IA3Config(target_modules=["lin0"], feedforward_modules=[]))
    model.add_weighted_adapter(["fresh_a", "fresh_b"], [0.5, 1.0], "not_identity")
    assert torch.all(lin0.ia3_l["not_identity"] == 1.5)  # the sum of the weights
    model.add_weighted_adapter(["fresh_a", "fresh_b"], [0.25, 0.75], "identity")
    assert torch.all(lin0.ia3_l["identity"] == 1.0)

    _, peft_lin0, peft_lin1 = _mix_example(in_peft=True)  # PEFT counts an absent adapter as 0
    assert torch.all(peft_lin0.ia3_l["mix"] == 1.5)
    assert torch.all(peft_lin1.ia3_l["mix"] == 1.5)  # 0.5 * 3 + 1.0 * 0
