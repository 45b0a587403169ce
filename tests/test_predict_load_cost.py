"""Loading an adapter costs the same however many adapters are loaded already.

Each Predictor.add_adapter used to walk every module of the model, every earlier adapter's copy
of an encoder's head included (and its untuned twin's), so loading N adapters was quadratic.
Counted in calls made, not timed: the calls of one load with 10 and with 200 adapters loaded.
"""

import sys

import pytest
import torch
import train_models as tm
from torch import nn

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError
from ia3engine.model import get_ia3_model
from ia3engine.serve.predict import Predictor


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("load_cost")
    return tm.tiny_adapters(
        root, (("e", "bert", "sentiment", "classify"), ("d", "gpt2", "sentiment", "classify"))
    )


def calls_of_one_load(predictor: Predictor, folder, name: str) -> int:
    """Python and builtin function calls made by one add_adapter."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        predictor.add_adapter(name, folder)
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize(("adapter", "base"), [("e", "bert"), ("d", "gpt2")])
def test_one_load_makes_as_many_calls_with_200_adapters_loaded_as_with_10(
    adapters, adapter, base, one_torch_thread
):
    predictor = Predictor(adapters[base], device="cpu")
    for i in range(10):
        predictor.add_adapter(f"a{i}", adapters[adapter])
    at_10 = calls_of_one_load(predictor, adapters[adapter], "probe10")
    for i in range(10, 200):
        predictor.add_adapter(f"a{i}", adapters[adapter])
    at_200 = calls_of_one_load(predictor, adapters[adapter], "probe200")
    assert at_200 == at_10, (at_10, at_200)


def test_loaded_adapters_stay_in_eval_mode(adapters, one_torch_thread):
    predictor = Predictor(adapters["bert"], device="cpu")
    for i in range(3):
        predictor.add_adapter(f"a{i}", adapters["e"])
    model = predictor._groups[predictor.adapters["a0"]["group"]]
    assert not [name for name, m in model.named_modules() if m.training]
    # and the loaded adapters answer as one loaded alone does (no dropout at work)
    alone = Predictor(adapters["bert"], device="cpu")
    alone.add_adapter("a2", adapters["e"])
    texts = [text for text, _ in tm.sentiment_rows(4, seed=3)]
    got_rows, want_rows = predictor.predict(texts, ["a2"] * 4), alone.predict(texts, ["a2"] * 4)
    for got, want in zip(got_rows, want_rows, strict=True):
        for label, prob in want["probs"].items():
            assert got["probs"][label] == pytest.approx(prob, abs=1e-6)


def test_adapters_removed_to_the_last_and_loaded_again_answer_as_before(adapters, one_torch_thread):
    """Removing the last adapter gives the base its layers back; the targets remembered for
    that config must not outlive it (the next load wraps the layers again)."""
    texts = [text for text, _ in tm.sentiment_rows(4, seed=5)]
    fresh = Predictor(adapters["gpt2"], device="cpu")
    fresh.add_adapter("d", adapters["d"])
    want = fresh.predict(texts, ["d"] * 4)
    predictor = Predictor(adapters["gpt2"], device="cpu")
    for name in ("x", "y"):
        predictor.add_adapter(name, adapters["d"])
    for name in ("x", "y"):
        predictor.remove_adapter(name)
    model = predictor._groups["lm"]
    assert not list(model.ia3_layers())  # the base's own layers are back
    predictor.add_adapter("d", adapters["d"])
    assert len(list(model.ia3_layers())) == len(list(fresh._groups["lm"].ia3_layers()))
    for got, row in zip(predictor.predict(texts, ["d"] * 4), want, strict=True):
        assert got["label"] == row["label"]
        for label, prob in row["probs"].items():
            assert got["probs"][label] == pytest.approx(prob, abs=1e-6)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0, self.lin1 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.lin1(self.lin0(x))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.out = _Block(), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.block(x))


@pytest.mark.parametrize("saved", ["block", "block.lin0"])
def test_a_saved_module_that_is_or_holds_a_scaled_layer_is_refused_before_anything_changes(saved):
    """Walks skip the insides of saved modules, so a layer IA3 scales must never end up in one
    (its copies would carry it); the refusal comes before the new adapter touches anything."""
    model = get_ia3_model(_Net(), IA3Config(target_modules=["lin0"], feedforward_modules=[]), "a")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = IA3Config(target_modules=["out"], feedforward_modules=[], modules_to_save=[saved])
    with pytest.raises(AdapterError, match="modules_to_save") as error:
        model.add_adapter("b", config)
    assert "block.lin0" in str(error.value)
    assert [n for n, _ in model.ia3_layers()] == ["block.lin0"]
    assert sorted(model.peft_config) == ["a"]
    after = model.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
