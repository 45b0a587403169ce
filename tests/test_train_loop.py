"""Loop pieces: schedule shape, gradient accumulation, Adafactor, seeds."""

import pytest
import torch
import train_models as tm
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from ia3engine import IA3Config, TrainSpec, get_ia3_model, train
from ia3engine.training import loop
from ia3engine.training.loop import make_schedule, pairs_over_split_batch
from ia3engine.training.losses import pair_loss
from ia3engine.training.tasks import EncoderClassify


def test_schedule_warms_up_linearly_then_decays_to_zero():
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = make_schedule(optimizer, total_steps=10, warmup_ratio=0.2)
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert schedule.get_last_lr()[0] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    return {
        "root": root,
        "model": tm.save_tiny("bert", root / "bert", dropout=0.0),
        "data": tm.write_sentiment(root / "train.csv", 32),
    }


def _run(setup, name, **overrides):
    values = dict(
        model=setup["model"],
        data=setup["data"],
        eval_data=setup["data"],
        steps=3,
        lr=0.05,
        batch_size=8,
        eval_every=0,
        warmup_ratio=0.0,
        max_length=16,
        device="cpu",
        out_dir=str(setup["root"] / name),
    )
    values.update(overrides)
    result = train(TrainSpec(**values))
    return result, load_file(str(setup["root"] / name / "adapter_model.safetensors"))


@pytest.mark.parametrize("pair_weight", [0.0, 1.0])
def test_two_accumulated_half_batches_equal_one_full_batch(setup, pair_weight):
    # with the pair objective, pairs that straddle the two halves must count as in one batch
    _, full = _run(setup, f"full{pair_weight}", pair_weight=pair_weight)
    _, halves = _run(
        setup, f"halves{pair_weight}", batch_size=4, grad_accum=2, pair_weight=pair_weight
    )
    ones = torch.ones_like
    assert any(k.endswith("ia3_l") and not torch.equal(v, ones(v)) for k, v in full.items())
    for key in full:
        assert torch.allclose(full[key], halves[key], atol=1e-5), key


def test_adafactor_tfew_preset_trains(setup):
    result, tensors = _run(setup, "tfew", preset="tfew", steps=2, lr=None, batch_size=None)
    assert result.steps == 2
    vectors = [v for k, v in tensors.items() if k.endswith("ia3_l")]
    assert any(not torch.equal(v, torch.ones_like(v)) for v in vectors)


def test_same_seed_same_vectors_other_seed_other_vectors(setup):
    _, a = _run(setup, "seed_a", seed=3)
    _, b = _run(setup, "seed_b", seed=3)
    _, c = _run(setup, "seed_c", seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.fixture
def split_step(tmp_path):
    """A tiny BERT with live dropout, the pair objective on, and a step of two halves."""
    folder = tm.save_tiny("bert", tmp_path / "bert", dropout=0.3)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model = get_ia3_model(base, IA3Config(task_type="SEQ_CLS")).train()
    task = EncoderClassify(tm.tokenizer("bert"), ["negative", "positive"], max_length=16)
    task.use_pairs(1.0)
    rows = tm.sentiment_rows(8)
    batches = [
        task.batch({"text": [t for t, _ in part], "label": [int(y == "positive") for _, y in part]})
        for part in (rows[:4], rows[4:])
    ]
    return model, task, batches


def _gradients(model, seed, loss_of):
    """Gradients of the trainable tensors after `loss_of()` at this seed; its value too."""
    model.zero_grad()
    torch.manual_seed(seed)
    value = loss_of()
    if torch.is_tensor(value):
        value.backward()
        value = value.item()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, value


def test_a_split_step_pairs_the_whole_batch_under_the_same_dropout(split_step):
    """Two micro-batches through the two-pass step give the gradient of one graph over both
    (cross-entropy averaged, every pair of the 8 rows), with the same dropout masks."""
    model, task, batches = split_step

    def one_graph():
        parts = [task.loss_parts(model, batch) for batch in batches]
        cross_entropy = (parts[0][0] + parts[1][0]) / 2  # two halves of 4 rows
        embeddings = torch.cat([embedding for _, embedding, _ in parts])
        return cross_entropy + pair_loss(embeddings, torch.cat([y for _, _, y in parts]))

    assert _gradients(model, 7, one_graph)[1] != pytest.approx(_gradients(model, 8, one_graph)[1])
    expected, value = _gradients(model, 7, one_graph)
    generator_after = torch.get_rng_state()
    split = lambda: pairs_over_split_batch(model, task, batches, Accelerator(cpu=True))  # noqa: E731
    got, total = _gradients(model, 7, split)
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6), name
    assert total == pytest.approx(value, rel=1e-5)
    assert torch.equal(torch.get_rng_state(), generator_after)


def test_a_step_past_the_pair_cap_pairs_within_groups(split_step, monkeypatch):
    """With room for 4 paired rows, each half pairs its own rows, weighted by its share."""
    model, task, batches = split_step
    monkeypatch.setattr(loop, "PAIR_ROWS", 4)

    def halves_apart():
        total = 0.0
        for batch in batches:
            cross_entropy, embedding, labels = task.loss_parts(model, batch)
            total = total + (cross_entropy + pair_loss(embedding, labels)) / 2
        return total

    expected, value = _gradients(model, 7, halves_apart)
    split = lambda: pairs_over_split_batch(model, task, batches, Accelerator(cpu=True))  # noqa: E731
    got, total = _gradients(model, 7, split)
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6), name
    assert total == pytest.approx(value, rel=1e-5)
