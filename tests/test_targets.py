"""Target detection: PEFT's table (PEFT as the oracle), the structural fallback, preview."""

import copy

import peft
import pytest
import tiny_models
import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    DistilBertConfig,
    ElectraConfig,
)

from ia3engine.config import IA3Config
from ia3engine.errors import NoTargetModulesError, UnsupportedLayerError
from ia3engine.model import get_ia3_model
from ia3engine.targets import (
    FEEDFORWARD_MODULES,
    TARGET_MODULES,
    layer_type,
    preview_targets,
    resolve_targets,
    vector_length,
)

TASKS = {
    "bert": "SEQ_CLS",
    "roberta": "SEQ_CLS",
    "gpt2": "CAUSAL_LM",
    "llama": "CAUSAL_LM",
    "t5": "SEQ_2_SEQ_LM",
    "opt": "CAUSAL_LM",
}


def peft_targets(model: nn.Module, **config) -> tuple[dict[str, bool], peft.PeftModel]:
    """PEFT's choice on a copy: {module name: is_feedforward}, and the PEFT model."""
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.IA3Config(**config))
    chosen = {
        name.removeprefix("base_model.model."): module.is_feedforward
        for name, module in wrapped.named_modules()
        if hasattr(module, "ia3_l")
    }
    return chosen, wrapped


def ours(model: nn.Module, config: IA3Config | None = None) -> dict[str, bool]:
    targets, _ = resolve_targets(model, config)
    return {t.name: t.feedforward for t in targets}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_default_targets_equal_peft(name):
    model = tiny_models.TRANSFORMERS[name]()
    theirs, wrapped = peft_targets(model, task_type=TASKS[name])
    saved = ["classifier"] if TASKS[name] == "SEQ_CLS" else None
    config = IA3Config(task_type=TASKS[name], modules_to_save=saved)
    targets, resolved = resolve_targets(model, config)
    assert {t.name: t.feedforward for t in targets} == theirs
    peft_config = wrapped.peft_config["default"]
    assert set(resolved.target_modules) == set(peft_config.target_modules)
    assert set(resolved.feedforward_modules) == set(peft_config.feedforward_modules)
    # PEFT puts the SEQ_CLS head in modules_to_save by itself; we count it when asked to.
    preview = preview_targets(model, config)
    assert preview.trainable_params == wrapped.get_nb_trainable_parameters()[0]
    assert preview.source == "table"


def test_table_has_every_peft_row_and_feedforward_is_inside_targets():
    expected_types = {
        "t5",
        "mt5",
        "gpt2",
        "bloom",
        "roberta",
        "opt",
        "gptj",
        "gpt_neox",
        "gpt_neo",
        "bart",
        "gpt_bigcode",
        "llama",
        "llama4",
        "mistral",
        "mixtral",
        "bert",
        "deberta-v2",
        "deberta",
        "RefinedWebModel",
        "RefinedWeb",
        "falcon",
        "phi",
        "gemma",
        "gemma2",
        "gemma3_text",
        "qwen2",
        "qwen3",
    }
    assert set(TARGET_MODULES) == set(FEEDFORWARD_MODULES) == expected_types
    for model_type, feedforward in FEEDFORWARD_MODULES.items():
        IA3Config(target_modules=TARGET_MODULES[model_type], feedforward_modules=feedforward)
        assert set(feedforward) <= set(TARGET_MODULES[model_type]), model_type


def test_gpt2_conv1d_vectors_have_the_right_widths():
    model = tiny_models.gpt2()
    rows = {r["module"]: r for r in preview_targets(model).rows}
    attn = rows["transformer.h.0.attn.c_attn"]
    proj = rows["transformer.h.0.mlp.c_proj"]
    assert (attn["layer_type"], attn["feedforward"], attn["params"]) == ("Conv1D", False, 96)
    assert (proj["layer_type"], proj["feedforward"], proj["params"]) == ("Conv1D", True, 128)


def test_real_minilm_trains_peft_count(minilm_path):
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    preview = preview_targets(model, IA3Config(modules_to_save=["classifier"]))
    assert preview.trainable_params == 16_898
    assert preview.model_type == "bert"
    assert len(preview.rows) == 24  # 6 layers x (key, value, 2 x output.dense)
    assert preview.saved_modules == ["classifier"]
    assert preview.total_params == sum(p.numel() for p in model.parameters())


def _distilbert():
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64
    )
    return AutoModelForSequenceClassification.from_config(config).eval()


def _electra():
    torch.manual_seed(0)
    config = ElectraConfig(
        vocab_size=128,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize(
    ("build", "kv", "down"),
    [(_distilbert, {"k_lin", "v_lin"}, "ffn.lin2"), (_electra, {"key", "value"}, "output.dense")],
)
def test_structural_fallback_picks_keys_values_and_ffn_down_projection(build, kv, down):
    model = build()
    assert model.config.model_type not in TARGET_MODULES
    targets, resolved = resolve_targets(model)
    leaves = {t.name.rsplit(".", 1)[-1] for t in targets if not t.feedforward}
    assert leaves == kv
    feedforward = [t.name for t in targets if t.feedforward]
    assert len(feedforward) == 2 and all(n.endswith(down) for n in feedforward)
    assert not any("attention" in n for n in feedforward)
    assert len(targets) == 6
    assert preview_targets(model).source == "structural"
    # The saved full paths select the same modules again, here and in PEFT.
    assert ours(model, resolved) == {t.name: t.feedforward for t in targets}
    theirs, _ = peft_targets(
        model,
        target_modules=resolved.target_modules,
        feedforward_modules=resolved.feedforward_modules,
    )
    assert theirs == {t.name: t.feedforward for t in targets}


def test_model_type_missing_from_the_table_uses_structure_of_gpt2():
    model = tiny_models.gpt2()
    model.config.model_type = "my_gpt"
    assert ours(model) == {
        "transformer.h.0.attn.c_attn": False,
        "transformer.h.0.mlp.c_proj": True,
        "transformer.h.1.attn.c_attn": False,
        "transformer.h.1.mlp.c_proj": True,
    }


def test_user_targets_on_unknown_model_take_feedforward_from_structure():
    model = _distilbert()
    config = IA3Config(target_modules=["k_lin", "lin2"])
    targets, resolved = resolve_targets(model, config)
    assert {t.name.rsplit(".", 1)[-1]: t.feedforward for t in targets} == {
        "k_lin": False,
        "lin2": True,
    }
    assert resolved.feedforward_modules == ["lin2"]  # a literal subset, so PEFT reloads it
    peft.IA3Config(
        target_modules=resolved.target_modules, feedforward_modules=resolved.feedforward_modules
    )


def test_plain_mlp_scales_every_layer_but_the_output_layer():
    model = tiny_models.mlp()
    targets, resolved = resolve_targets(model)
    assert [(t.name, t.feedforward, t.layer_type) for t in targets] == [("lin0", False, "Linear")]
    assert resolved.target_modules == ["lin0"] and resolved.feedforward_modules == []


def test_convnet_scales_convolutions_with_channel_vectors():
    model = tiny_models.convnet()
    rows = {r["module"]: (r["layer_type"], r["params"]) for r in preview_targets(model).rows}
    assert rows == {
        "conv0": ("Conv2d", 8),
        "conv1": ("Conv2d", 8),
        "conv3d": ("Conv3d", 4),
        "lin0": ("Linear", 16),
    }
    assert vector_length(model.conv0, feedforward=True) == 3
    assert vector_length(model.conv3d, feedforward=True) == 1


def test_exclude_modules_list_and_regex_win_like_peft():
    model = tiny_models.llama()
    for exclude in (["model.layers.0.self_attn.k_proj", "down_proj"], r".*layers\.1\..*"):
        theirs, _ = peft_targets(model, task_type="CAUSAL_LM", exclude_modules=exclude)
        mine = ours(model, IA3Config(exclude_modules=exclude))
        assert mine == theirs
        assert 0 < len(mine) < 6


def test_all_linear_on_llama_equals_peft_and_skips_lm_head():
    model = tiny_models.llama()
    theirs, _ = peft_targets(model, task_type="CAUSAL_LM", target_modules="all-linear")
    targets, resolved = resolve_targets(model, IA3Config(target_modules="all-linear"))
    mine = {t.name: t.feedforward for t in targets}
    assert mine == theirs
    assert "lm_head" not in mine and len(mine) == 14
    assert sum(mine.values()) == 2  # down_proj per layer, from the table
    # Saved as full paths with full-path feedforward entries: reloadable here and by PEFT
    # (PEFT itself saves ["down_proj"], which its own subset check then refuses, bug #7).
    assert sorted(resolved.target_modules) == sorted(mine)
    assert sorted(resolved.feedforward_modules) == sorted(n for n, ff in mine.items() if ff)
    peft.IA3Config(
        target_modules=resolved.target_modules, feedforward_modules=resolved.feedforward_modules
    )
    reloaded = IA3Config(target_modules=resolved.target_modules, feedforward_modules=["down_proj"])
    assert ours(model, reloaded) == mine


def test_all_linear_never_takes_a_tied_head_or_saved_modules():
    gpt2 = tiny_models.gpt2()
    assert "lm_head" not in ours(gpt2, IA3Config(target_modules="all-linear"))
    bert = tiny_models.bert()
    mine = ours(bert, IA3Config(target_modules="all-linear", modules_to_save=["classifier"]))
    assert "classifier" not in mine and "bert.pooler.dense" in mine


def test_modules_to_save_are_never_targeted():
    model = tiny_models.bert()
    config = IA3Config(target_modules=["key", "classifier"], modules_to_save=["classifier"])
    assert all(n.endswith(".key") for n in ours(model, config))


def test_regex_targets_with_list_feedforward_on_t5():
    model = tiny_models.t5()
    spec = r".*\.(SelfAttention|EncDecAttention)\.(k|v)|.*\.wo"
    theirs, _ = peft_targets(model, target_modules=spec, feedforward_modules=["wo"])
    targets, resolved = resolve_targets(
        model, IA3Config(target_modules=spec, feedforward_modules=["wo"])
    )
    assert {t.name: t.feedforward for t in targets} == theirs
    assert resolved.target_modules == spec


@pytest.mark.peft_bug  # spec bug #9
def test_feedforward_list_needs_a_dot_boundary_unlike_peft():
    model = tiny_models.mlp()
    theirs, _ = peft_targets(model, target_modules="lin.", feedforward_modules=["in0"])
    assert theirs["lin0"] is True  # PEFT's plain endswith, spec bug #9
    assert ours(model, IA3Config(target_modules="lin.", feedforward_modules=["in0"])) == {
        "lin0": False,
        "lin1": False,
    }


def test_nothing_matched_names_the_spec_and_some_layers():
    with pytest.raises(NoTargetModulesError) as caught:
        resolve_targets(tiny_models.bert(), IA3Config(target_modules=["nope"]))
    message = str(caught.value)
    assert "'nope'" in message and "key" in message and "target_modules" in message


def test_everything_excluded_is_reported_as_nothing_matched():
    with pytest.raises(NoTargetModulesError, match="exclude_modules"):
        resolve_targets(tiny_models.llama(), IA3Config(exclude_modules=".*"))


def test_unsupported_layer_names_module_type_and_supported_types():
    with pytest.raises(UnsupportedLayerError) as caught:
        resolve_targets(tiny_models.bert(), IA3Config(target_modules=["embeddings.dropout"]))
    message = str(caught.value)
    assert "bert.embeddings.dropout" in message and "Dropout" in message
    assert "Conv1D" in message and "exclude_modules" in message


def test_preview_does_not_change_the_model():
    model = tiny_models.bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [(n, type(m)) for n, m in model.named_modules()]
    grads = [p.requires_grad for p in model.parameters()]
    preview = preview_targets(model, IA3Config(modules_to_save=["classifier"]))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert [p.requires_grad for p in model.parameters()] == grads
    assert "8 modules" in preview.summary() and "386" in preview.summary()


class _Wrapped(nn.Module):
    """Stands in for an IA3 layer: the real layer under `base_layer`, vectors in `ia3_l`."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base_layer = base
        self.ia3_l = nn.ParameterDict({"default": nn.Parameter(torch.ones(base.out_features))})


def test_already_wrapped_layers_are_seen_through():
    model = tiny_models.llama()
    expected = ours(model)
    attention = model.model.layers[0].self_attn
    attention.k_proj = _Wrapped(attention.k_proj)
    targets, _ = resolve_targets(model)
    assert {t.name: t.feedforward for t in targets} == expected
    wrapped = next(t for t in targets if t.name == "model.layers.0.self_attn.k_proj")
    assert wrapped.module is attention.k_proj and wrapped.layer_type == "Linear"
    assert preview_targets(model).total_params == sum(
        p.numel() for n, p in model.named_parameters() if "ia3_" not in n
    )


def test_bitsandbytes_layers_are_recognised_without_a_gpu():
    bnb = pytest.importorskip("bitsandbytes")
    eight = bnb.nn.Linear8bitLt(16, 8, has_fp16_weights=False)
    four = bnb.nn.Linear4bit(16, 8)
    assert layer_type(eight) == "Linear8bitLt" and layer_type(four) == "Linear4bit"
    assert vector_length(eight, feedforward=True) == 16
    assert vector_length(four, feedforward=False) == 8


def test_table_row_matching_nothing_falls_back_to_structure():
    model = tiny_models.llama()
    model.config.model_type = "bert"  # the bert row (key, value, output.dense) finds nothing
    preview = preview_targets(model)
    assert preview.source == "structural"
    assert {r["module"].rsplit(".", 1)[-1]: r["feedforward"] for r in preview.rows} == {
        "k_proj": False,
        "v_proj": False,
        "down_proj": True,
    }


def test_plain_transformer_layers_keep_their_last_linear():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    names = ours(model)
    assert "layers.1.linear2" in names and len(names) == 6  # out_proj, linear1, linear2 x 2


class _EncoderWithHead(nn.Module):
    """A user's own class around a transformers encoder, with its own output layer."""

    def __init__(self):
        super().__init__()
        self.encoder = _distilbert().distilbert
        self.out = nn.Linear(32, 3)


def test_custom_module_around_a_transformer_uses_its_blocks_and_skips_the_head():
    mine = ours(_EncoderWithHead())
    assert "out" not in mine
    assert sorted({n.rsplit(".", 1)[-1] for n in mine}) == ["k_lin", "lin2", "v_lin"]


def test_sequential_head_after_blocks_is_not_a_block():
    torch.manual_seed(0)
    body = _distilbert().distilbert.transformer.layer
    model = nn.Sequential(body[0], body[1], nn.Linear(32, 2))
    mine = ours(model)
    assert "2" not in mine and len(mine) == 6
    assert {n for n, ff in mine.items() if ff} == {"0.ffn.lin2", "1.ffn.lin2"}


def test_preview_of_an_injected_model_counts_like_the_bare_model():
    model = tiny_models.bert()
    config = IA3Config(modules_to_save=["classifier"])
    before = preview_targets(model, config)
    get_ia3_model(model, config)
    after = preview_targets(model, config)
    assert after.rows == before.rows
    assert (after.trainable_params, after.total_params) == (386, before.total_params)
