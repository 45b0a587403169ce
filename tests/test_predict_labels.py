"""Predictor.add_labels (the untuned base ranking labels a request names) and per-row stops in
generation: a label set answers as add_untuned does and beside an adapter in one call, leaves
nothing behind when removed, and is refused on an encoder; a row whose stop turns true ends
there while the others go on."""

from __future__ import annotations

import pytest
import torch
import train_models as tm

from ia3engine.errors import AdapterError
from ia3engine.serve.predict import Predictor
from ia3engine.training.streamer import RowStop

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster
TEXTS = ["the food was good", "the book was dull"]
LABELS = ["positive", "negative", "dull"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-labels")
    data = tm.write_instructions(root / "i.jsonl")
    runs = [("c", "gpt2", "sentiment", "classify"), ("g", "gpt2", data, "generate")]
    found = tm.tiny_adapters(root, runs)
    found["t5"] = tm.save_tiny("t5", root / "t5")
    return found


def _same(got, want):
    assert [r["label"] for r in got] == [r["label"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-5)


@pytest.mark.parametrize("base", ["gpt2", "t5"])
def test_a_label_set_answers_as_the_untuned_base(bases, base):
    alone = Predictor(bases[base], device="cpu")
    alone.add_untuned(LABELS)
    served = Predictor(bases[base], device="cpu")
    served.add_labels("three", LABELS)
    served.add_labels("two", ["good", "bad"])
    got = served.predict(TEXTS + TEXTS[:1], ["three", "three", "two"])
    _same(got[:2], alone.predict(TEXTS))
    assert set(got[2]["probs"]) == {"good", "bad"}
    assert served.adapter_bytes("three") == 0  # no vectors, no head: the bare base
    served.remove_adapter("three")
    assert list(served.adapters) == ["two"]
    with pytest.raises(AdapterError, match="loaded already"):
        served.add_labels("two", ["a", "b"])


def test_label_sets_and_adapters_share_one_predictor(bases):
    served = Predictor(bases["gpt2"], device="cpu")
    served.add_adapter("c", bases["c"])
    served.add_labels("three", LABELS)
    mixed = served.predict(TEXTS, ["c", "three"])
    alone = Predictor(bases["gpt2"], device="cpu")
    alone.add_adapter("c", bases["c"])
    _same(mixed[:1], alone.predict(TEXTS[:1], ["c"]))
    untuned = Predictor(bases["gpt2"], device="cpu")
    untuned.add_untuned(LABELS)
    _same(mixed[1:], untuned.predict(TEXTS[1:]))


def test_an_encoder_has_no_head_to_rank_labels_with(bases):
    with pytest.raises(AdapterError, match="encoder: it has no head"):
        Predictor(bases["bert"], device="cpu").add_labels("three", LABELS)


def test_a_stopped_row_ends_while_the_others_go_on(bases):
    predictor = Predictor(bases["gpt2"], task="generate", device="cpu")
    predictor.add_adapter("g", bases["g"])
    prompts = ["Say it again : the food was good"] * 2
    whole = predictor.predict(prompts[:1], ["g"], max_new_tokens=30)[0]["text"]
    steps = {"n": 0}

    def after_five() -> bool:
        steps["n"] += 1
        return steps["n"] > 5

    out = predictor.predict(
        prompts, ["g", "g"], max_new_tokens=30, should_stop={1: after_five, 0: lambda: False}
    )
    assert out[0]["text"] == whole
    assert whole.startswith(out[1]["text"]) and len(out[1]["text"].split()) <= 6
    assert len(whole.split()) > 6
    done = RowStop({0: lambda: True, 5: lambda: True})(torch.zeros(2, 3, dtype=torch.long), None)
    assert done.tolist() == [True, False]  # a row beyond the batch is ignored
