"""IA3Config: validation messages, PEFT's subset rule (and our fixes), JSON round trip, matching."""

import json
import logging

import peft
import pytest

from ia3engine.config import IA3Config, covers, matches, select
from ia3engine.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_modules": ""}, "target_modules"),
        ({"target_modules": 3}, "target_modules"),
        ({"target_modules": ["k", ""]}, "target_modules"),
        ({"target_modules": "(unclosed"}, "target_modules"),
        ({"exclude_modules": "[a-"}, "exclude_modules"),
        ({"feedforward_modules": [None]}, "feedforward_modules"),
        ({"modules_to_save": "classifier"}, "modules_to_save"),
        ({"fan_in_fan_out": "yes"}, "fan_in_fan_out"),
        ({"init_ia3_weights": 1}, "init_ia3_weights"),
        ({"inference_mode": None}, "inference_mode"),
        ({"task_type": "CLASSIFY"}, "task_type"),
        ({"peft_type": "LORA"}, "peft_type"),
        ({"base_model_name_or_path": ""}, "base_model_name_or_path"),
        ({"revision": 5}, "revision"),
    ],
)
def test_invalid_field_is_named_in_the_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        IA3Config(**kwargs)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        IA3Config(target_modules="(", task_type="NOPE", fan_in_fan_out=2, modules_to_save=[""])
    message = str(caught.value)
    for field in ("target_modules", "task_type", "fan_in_fan_out", "modules_to_save"):
        assert field in message
    assert "SEQ_CLS" in message  # the fix: the allowed task types are listed


def test_defaults_match_peft():
    ours = IA3Config().to_dict()
    theirs = peft.IA3Config().to_dict()
    assert set(ours) == set(theirs)
    for key in ours:
        if key != "peft_version":
            assert ours[key] == getattr(theirs[key], "value", theirs[key]), key


def test_peft_task_type_enum_is_accepted_as_its_value():
    config = IA3Config(task_type=peft.TaskType.SEQ_CLS)
    assert config.task_type == "SEQ_CLS"
    assert json.dumps(config.to_dict())


@pytest.mark.parametrize(
    ("targets", "feedforward"),
    [
        (["k", "v", "wo"], ["wo"]),
        (["key", "value", "output.dense"], ["output.dense"]),
        (["k_proj", "v_proj", "down_proj"], []),
        (r".*\.(k|v|wo)", ["wo"]),  # a regex target is not checked, in PEFT or here
        (["k", "v"], None),
        (None, ["wo"]),
    ],
)
def test_subset_cases_peft_accepts_are_accepted(targets, feedforward):
    peft.IA3Config(target_modules=targets, feedforward_modules=feedforward)
    IA3Config(target_modules=targets, feedforward_modules=feedforward)


@pytest.mark.peft_bug  # spec bug #9
@pytest.mark.parametrize(
    ("targets", "feedforward"),
    [
        (["mlp.down_proj", "k_proj"], ["down_proj"]),  # spec bug #9
        (["down_proj"], ["mlp.down_proj"]),
        (["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.k_proj"], ["down_proj"]),
    ],
)
def test_dot_suffix_subset_cases_peft_refuses_are_accepted(targets, feedforward):
    with pytest.raises(ValueError, match="subset"):
        peft.IA3Config(target_modules=targets, feedforward_modules=feedforward)
    config = IA3Config(target_modules=targets, feedforward_modules=feedforward)
    assert config.feedforward_modules == feedforward


@pytest.mark.parametrize(
    ("targets", "feedforward"),
    [(["k", "v"], ["wo"]), (["lin0"], ["in0"]), (["xdown_proj"], ["down_proj"])],
)
def test_feedforward_outside_the_targets_is_refused_with_the_fix(targets, feedforward):
    with pytest.raises(ConfigError, match="feedforward_modules.*target_modules"):
        IA3Config(target_modules=targets, feedforward_modules=feedforward)


def test_covers_needs_a_dot_boundary():
    assert covers(["model.layers.0.mlp.down_proj"], "down_proj")
    assert covers(["down_proj"], "mlp.down_proj")
    assert not covers(["lin0"], "in0")
    assert not covers(["mlp.xdown_proj"], "down_proj")


def test_list_matching_uses_equality_or_a_dot_suffix():
    assert matches(["k"], "k")
    assert matches(["k"], "encoder.block.0.layer.0.SelfAttention.k")
    assert matches(["output.dense"], "bert.encoder.layer.0.attention.output.dense")
    assert not matches(["in0"], "lin0")  # PEFT's feedforward endswith would say yes
    assert not matches(["k"], "block.0.kk")
    assert not matches(None, "k")
    assert not matches([], "k")


def test_regex_matching_is_a_full_match():
    spec = r".*\.(k|v)"
    assert matches(spec, "encoder.block.0.layer.0.SelfAttention.k")
    assert not matches(spec, "encoder.block.0.layer.0.SelfAttention.k.weight")
    assert not matches("SelfAttention", "encoder.block.0.layer.0.SelfAttention.k")


def test_round_trip_through_json_keeps_every_field():
    config = IA3Config(
        target_modules={"v", "k", "wo"},
        feedforward_modules=["wo"],
        exclude_modules=r".*decoder.*",
        modules_to_save=["classifier"],
        init_ia3_weights=False,
        task_type="SEQ_2_SEQ_LM",
        base_model_name_or_path="t5-small",
        revision="main",
        inference_mode=True,
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["target_modules"] == ["k", "v", "wo"]  # sets are written as sorted lists
    assert IA3Config.from_dict(data) == config


def test_written_keys_are_the_ones_peft_writes():
    assert set(IA3Config().to_dict()) == {
        "auto_mapping",
        "base_model_name_or_path",
        "exclude_modules",
        "fan_in_fan_out",
        "feedforward_modules",
        "inference_mode",
        "init_ia3_weights",
        "modules_to_save",
        "peft_type",
        "peft_version",
        "revision",
        "target_modules",
        "task_type",
    }


def test_config_written_by_peft_loads():
    theirs = peft.IA3Config(
        task_type="CAUSAL_LM",
        target_modules=["k_proj", "down_proj"],
        feedforward_modules=["down_proj"],
    ).to_dict()
    theirs = {k: sorted(v) if isinstance(v, set) else v for k, v in theirs.items()}
    theirs = {k: getattr(v, "value", v) for k, v in theirs.items()}  # enums -> JSON strings
    config = IA3Config.from_dict(json.loads(json.dumps(theirs)))
    assert config.target_modules == ["down_proj", "k_proj"]
    assert config.feedforward_modules == ["down_proj"]
    assert config.task_type == "CAUSAL_LM"


def test_unknown_keys_are_dropped_with_a_warning(caplog):
    data = IA3Config(target_modules=["k"]).to_dict() | {"layers_to_transform": [0], "r": 8}
    with caplog.at_level(logging.WARNING, logger="ia3engine.config"):
        config = IA3Config.from_dict(data)
    assert config.target_modules == ["k"]
    assert "layers_to_transform" in caplog.text and "r" in caplog.text


def test_lora_config_is_refused_as_not_ia3():
    data = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}
    with pytest.raises(ConfigError, match="LORA adapter, not IA3"):
        IA3Config.from_dict(data)


def test_non_dict_config_is_refused():
    with pytest.raises(ConfigError, match="JSON object"):
        IA3Config.from_dict(["IA3"])


@pytest.mark.parametrize(
    "spec",
    [None, [], ["k"], ["output.dense", "lin0"], ["in0"], r".*\.(k|wo)", "lin.", ["a.b.k"]],
)
def test_select_agrees_with_matches(spec):
    names = ["k", "a.b.k", "b.kk", "lin0", "x.lin0", "attention.output.dense", "wo", "z.wo"]
    assert select(spec, names) == [n for n in names if matches(spec, n)]
