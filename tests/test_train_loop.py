"""Loop pieces: schedule shape, gradient accumulation, Adafactor, seeds."""

import pytest
import torch
import train_models as tm
from safetensors.torch import load_file

from ia3engine import TrainSpec, train
from ia3engine.training.loop import make_schedule


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


def test_two_accumulated_half_batches_equal_one_full_batch(setup):
    # the pair objective pairs rows within one forward, so only cross-entropy adds up exactly
    _, full = _run(setup, "full", pair_weight=0.0)
    _, halves = _run(setup, "halves", batch_size=4, grad_accum=2, pair_weight=0.0)
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
