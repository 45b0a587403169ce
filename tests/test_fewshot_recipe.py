"""The few-shot parts of the default recipe: every row trains on small sets, steps stop at
`max_epochs` passes, and SetFit's pair objective beside cross-entropy (docs/training.md)."""

import pytest
import torch
import train_models as tm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from app.settings import VAL_SHARES, SettingsForm, spec_fields
from ia3engine import TrainSpec, train
from ia3engine.data.dataset import prepare_dataset
from ia3engine.data.split import AUTO_VAL_MIN_ROWS, auto_val_fraction
from ia3engine.errors import SpecError
from ia3engine.training.losses import pair_loss
from ia3engine.training.tasks import EncoderClassify


# ---- the validation share ------------------------------------------------------------------
def test_auto_share_holds_back_rows_only_when_they_are_enough_to_score():
    assert auto_val_fraction(32) == 0.0
    assert auto_val_fraction(499) == 0.0
    assert auto_val_fraction(500) == pytest.approx(0.1)
    assert 500 * auto_val_fraction(500) >= AUTO_VAL_MIN_ROWS


def test_a_small_file_without_eval_trains_on_every_row_and_says_so(tmp_path):
    path = tm.write_sentiment(tmp_path / "small.csv", 40)
    data = prepare_dataset(path, val_fraction=None)
    assert len(data.train) == 40 and len(data.eval) == 0
    note = next(w for w in data.warnings if "none are held back" in w)
    assert "All 40 rows" in note and "eval file" in note


def test_a_large_file_without_eval_keeps_ten_percent_for_validation(tmp_path):
    path = tm.write_sentiment(tmp_path / "large.csv", 600)
    data = prepare_dataset(path, val_fraction=None)
    assert (len(data.train), len(data.eval)) == (540, 60)
    assert not any("held back" in w for w in data.warnings)


def test_a_chosen_share_is_kept_even_on_a_small_file(tmp_path):
    path = tm.write_sentiment(tmp_path / "small.csv", 40)
    assert len(prepare_dataset(path, val_fraction=0.25).eval) == 10
    assert len(prepare_dataset(path, val_fraction=0).eval) == 0


def test_spec_default_leaves_the_share_to_the_row_count(tmp_path):
    path = tm.write_sentiment(tmp_path / "small.csv", 40)
    spec = TrainSpec(data=path).validate()
    assert spec.val_fraction is None
    assert len(prepare_dataset(**spec.data_options()).eval) == 0
    # early stopping needs validation rows: the default then holds back the usual share
    stopping = TrainSpec(data=path, early_stopping_patience=2).validate()
    assert len(prepare_dataset(**stopping.data_options()).eval) == 4


def test_spec_refuses_early_stopping_with_no_validation_rows(tmp_path):
    path = tm.write_sentiment(tmp_path / "small.csv", 40)
    with pytest.raises(SpecError, match="early_stopping_patience needs validation rows"):
        TrainSpec(data=path, val_fraction=0, early_stopping_patience=2).validate()
    for bad in (-0.1, 0.6, "x"):
        with pytest.raises(SpecError, match="val_fraction"):
            TrainSpec(data=path, val_fraction=bad).validate()


# ---- steps by passes -----------------------------------------------------------------------
def test_max_epochs_shortens_runs_on_tiny_data_only():
    spec = TrainSpec(data="x.csv", steps=120, batch_size=16, max_epochs=20)
    assert spec.steps_for(16) == 20  # 20 passes over 16 rows, 16 a step
    assert spec.steps_for(32) == 40
    assert spec.steps_for(1000) == 120  # never more than `steps`
    assert TrainSpec(data="x.csv", steps=120, batch_size=16).steps_for(16) == 120
    accumulated = TrainSpec(data="x.csv", steps=120, batch_size=8, grad_accum=2, max_epochs=20)
    assert accumulated.steps_for(16) == 20


@pytest.mark.parametrize(
    ("field", "value"), [("max_epochs", 0), ("max_epochs", -3), ("pair_weight", -1)]
)
def test_spec_refuses_bad_recipe_numbers(field, value):
    with pytest.raises(SpecError, match=field):
        TrainSpec(data="x.csv", **{field: value}).validate()


def test_presets_keep_their_meaning():
    quick = TrainSpec(data="x.csv").resolved()
    tfew = TrainSpec(data="x.csv", preset="tfew").resolved()
    assert quick.max_epochs and quick.pair_weight > 0
    assert tfew.steps == 1000 and tfew.max_epochs is None and tfew.pair_weight == 0


def test_a_tiny_run_trains_max_epochs_passes_and_logs_why(tmp_path):
    root = tmp_path
    base = tm.save_tiny("bert", root / "bert")
    data = tm.write_sentiment(root / "train.csv", 16)
    events = []
    spec = TrainSpec(
        model=base,
        data=data,
        steps=50,
        batch_size=8,
        max_epochs=3,
        max_length=16,
        device="cpu",
        out_dir=str(root / "out"),
    )
    result = train(spec, on_event=events.append)
    assert result.steps == 6  # 3 passes over 16 rows, 8 a step
    started = next(e for e in events if e["type"] == "started")
    assert started["total_steps"] == 6 and started["train_rows"] == 16
    messages = [e.get("message", "") for e in events]
    assert any("Training 6 steps, not 50" in m for m in messages)
    # a folder without 1_Pooling/config.json: the pair objective compares masked means
    assert any("Pair objective (weight 1)" in m and "mean pooling" in m for m in messages)
    assert result.metrics == {}  # no eval file and 16 rows: nothing held back


# ---- the pair objective --------------------------------------------------------------------
def test_pair_loss_is_zero_when_classes_are_orthogonal_and_rows_alike():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    assert pair_loss(features, labels).item() == pytest.approx(0.0, abs=1e-7)
    # same-label rows at right angles and other-label rows aligned: every pair is 1 off
    swapped = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert pair_loss(swapped, torch.tensor([0, 0, 1])).item() == pytest.approx(2 / 3)
    assert pair_loss(features[:1], labels[:1]).item() == 0.0


def test_pair_weight_adds_a_gradient_through_the_features(tmp_path):
    base = tm.save_tiny("bert", tmp_path / "bert", dropout=0.0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(base)
    task = EncoderClassify(tokenizer, ["bad", "good"], 16)
    batch = task.batch(
        {"text": ["a good film", "a bad film", "good", "bad"], "label": [1, 0, 1, 0]}
    )
    plain = task.loss(model, dict(batch))
    task.use_pairs(2.0, ("mean",))
    assert task.pair_weight == 2.0 and task.pooling == ("mean",)
    with_pairs = task.loss(model, dict(batch))
    assert with_pairs.item() > plain.item()
    # the extra term reaches the body: the deepest layer's weights get a different gradient
    layer = model.bert.encoder.layer[-1].output.dense.weight
    grads = []
    for weight in (0.0, 2.0):
        task.pair_weight = weight
        model.zero_grad()
        task.loss(model, dict(batch)).backward()
        grads.append(layer.grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    # the objective reads the pooled last hidden states: another pooling, another loss
    task.pair_weight = 2.0
    task.use_pairs(2.0, ("cls",))
    assert task.loss(model, dict(batch)).item() != pytest.approx(with_pairs.item())


def test_the_studio_sends_auto_as_no_share_and_none_as_zero():
    auto = dict.fromkeys(SettingsForm.FIELDS) | {"val_fraction": "auto"}
    assert spec_fields(SettingsForm, list(auto.values()))["val_fraction"] is None
    none = auto | {"val_fraction": 0.0}
    assert spec_fields(SettingsForm, list(none.values()))["val_fraction"] == 0.0
    assert ("Auto: 10% from 500 rows up, else none", "auto") == VAL_SHARES[0]
