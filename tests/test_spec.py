"""TrainSpec: presets, validation that names every bad field, JSON round trip."""

import json

import pytest

from ia3engine import TrainSpec
from ia3engine.errors import SpecError
from ia3engine.training.spec import BOUNDS, PRESETS


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\n")
    return str(path)


def test_resolved_fills_every_preset_field_and_keeps_overrides(data_file):
    spec = TrainSpec(data=data_file, preset="tfew", lr=1e-2).resolved()
    assert spec.lr == 1e-2
    assert spec.steps == 1000 and spec.batch_size == 8 and spec.optimizer == "adafactor"
    assert spec.warmup_ratio == 0.06
    for key in PRESETS["quick"]:
        assert getattr(TrainSpec(data=data_file).resolved(), key) is not None
    assert spec.name and spec.out_dir


def test_resolved_leaves_the_original_untouched(data_file):
    spec = TrainSpec(data=data_file)
    spec.resolved()
    assert spec.steps is None and spec.name is None


def test_valid_spec_passes(data_file, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert TrainSpec(data=data_file).validate()
    assert TrainSpec(model=str(folder), data=data_file, device="cuda:1").resolved().validate()


def test_validation_names_every_bad_field_at_once(data_file):
    spec = TrainSpec(
        data=data_file,
        task="translate",
        preset="slow",
        steps=0,
        lr=-1.0,
        batch_size=2.5,
        optimizer="sgd",
        quantize="3bit",
        warmup_ratio=1.5,
        device="gpu0",
        val_fraction=0.9,
        template="no slot",
    )
    with pytest.raises(SpecError) as caught:
        spec.validate()
    message = str(caught.value)
    for name in (
        "task",
        "preset",
        "steps",
        "lr",
        "batch_size",
        "optimizer",
        "quantize",
        "warmup_ratio",
        "device",
        "val_fraction",
        "template",
    ):
        assert name in message
    assert len(caught.value.problems) == 11


def test_missing_data_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        TrainSpec(data=str(tmp_path / "nope.csv")).validate()
    with pytest.raises(SpecError, match="eval_data"):
        TrainSpec(data=str(tmp_path / "x.csv"), eval_data="missing/eval.jsonl").validate()


def test_hub_dataset_id_is_not_taken_for_a_missing_file():
    assert TrainSpec(data="stanfordnlp/sst2").validate()


def test_empty_model_and_missing_model_folder_are_reported(data_file, tmp_path):
    with pytest.raises(SpecError, match="model is empty"):
        TrainSpec(model=" ", data=data_file).validate()
    with pytest.raises(SpecError, match="does not exist"):
        TrainSpec(model=str(tmp_path / "no-model"), data=data_file).validate()
    with pytest.raises(SpecError, match="config.json"):
        TrainSpec(model=str(tmp_path), data=data_file).validate()


def test_json_round_trip_keeps_every_field(data_file):
    spec = TrainSpec(data=data_file, target_modules=["key", "value"], steps=7).resolved()
    again = TrainSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_unknown_json_key_is_refused():
    with pytest.raises(SpecError, match="Unknown spec field 'epochs'"):
        TrainSpec.from_dict({"data": "x.csv", "epochs": 3})


def test_target_modules_must_be_a_list_of_names(data_file):
    with pytest.raises(SpecError, match="target_modules"):
        TrainSpec(data=data_file, target_modules="key").validate()


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 10**7),
        ("grad_accum", 10**6),
        ("steps", 10**9),
        ("max_length", 10**7),
        ("eval_every", 10**9),
        ("early_stopping_patience", 10**6),
        ("seed", 2**64),
        ("max_rows", 10**9),
    ],
)
def test_every_number_has_an_upper_bound_named_in_the_message(data_file, field, value):
    with pytest.raises(SpecError) as caught:
        TrainSpec(data=data_file, **{field: value}).validate()
    message = str(caught.value)
    assert message.startswith(f"{field} is ") and "it must be a whole number" in message
    low, high, _ = BOUNDS[field]
    assert TrainSpec(data=data_file, **{field: high}).validate()
    assert f"{high:,}" in message


@pytest.mark.parametrize(
    "template, shown",
    [
        ("{text:>2000000}", "{text:>2000000}"),
        ("{text!r}", "{text!r}"),
        ("{text.__class__}", "{text.__class__}"),
        ("{text[0]}", "{text[0]}"),
    ],
)
def test_templates_are_plain_column_placeholders_only(data_file, template, shown):
    with pytest.raises(SpecError) as caught:
        TrainSpec(data=data_file, template=f"Review: {template}").validate()
    message = str(caught.value)
    assert shown in message and "only plain column names in braces" in message
    assert TrainSpec(data=data_file, template="Review: {text} {{literal}}").validate()


def test_long_texts_and_module_lists_are_refused(data_file):
    with pytest.raises(SpecError) as caught:
        TrainSpec(
            data=data_file,
            name="n" * 300,
            template="{text}" + "x" * 5000,
            target_modules=[f"m{i}" for i in range(500)],
        ).validate()
    message = str(caught.value)
    assert "name has 300 characters; at most 200" in message
    assert "at most 4,000 are allowed" in message and "target_modules lists 500" in message
