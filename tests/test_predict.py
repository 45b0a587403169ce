"""Predictor: one base, many adapters, mixed batches, untuned rows, clear errors."""

import pytest
import torch
import train_models as tm
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ia3engine.errors import AdapterError
from ia3engine.serve.predict import Predictor

TEXTS = [text for text, _ in tm.sentiment_rows(6, seed=7)]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    return tm.tiny_adapters(
        root,
        (
            ("a", "bert", "sentiment", "classify"),
            ("b", "bert", "flipped", "classify"),
            ("c", "gpt2", "sentiment", "classify"),
            ("g", "gpt2", tm.write_instructions(root / "i.jsonl"), "generate"),
        ),
    )


def test_mixed_batch_matches_one_adapter_at_a_time(adapters):
    p = Predictor(adapters["bert"], device="cpu")
    p.add_adapter("a", adapters["a"])
    p.add_adapter("b", adapters["b"])
    names = ["a", "b", "a", "b", "a", "b"]
    mixed = p.predict(TEXTS, names)
    for name in ("a", "b"):
        alone = p.predict(TEXTS, [name] * len(TEXTS))
        for row, (got, want) in enumerate(zip(mixed, alone, strict=True)):
            if names[row] == name:
                assert got["label"] == want["label"]
                for label, prob in want["probs"].items():
                    assert got["probs"][label] == pytest.approx(prob, abs=1e-5)


def test_untuned_encoder_row_is_the_head_with_vectors_at_one(adapters):
    p = Predictor(adapters["bert"], device="cpu")
    p.add_adapter("a", adapters["a"])
    untuned = p.predict(TEXTS, [None] * len(TEXTS))
    base = AutoModelForSequenceClassification.from_pretrained(adapters["bert"], num_labels=2)
    model = PeftModel.from_pretrained(base, str(adapters["a"])).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.fill_(1.0)
        tokenizer = AutoTokenizer.from_pretrained(adapters["bert"])
        probs = torch.softmax(
            model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits, -1
        )
    got = torch.tensor([[r["probs"]["negative"], r["probs"]["positive"]] for r in untuned])
    assert torch.allclose(got, probs, atol=1e-5)


def test_generative_untuned_rows_use_the_bare_base(adapters):
    p = Predictor(adapters["gpt2"], device="cpu")
    p.add_adapter("c", adapters["c"])
    mixed = p.predict(TEXTS[:4], ["c", None, "c", None])
    bare = Predictor(adapters["gpt2"], device="cpu")
    bare.add_untuned(["negative", "positive"])
    base_rows = bare.predict(TEXTS[:4], ["untuned"] * 4)
    for row in (1, 3):
        for label in ("negative", "positive"):
            assert mixed[row]["probs"][label] == pytest.approx(
                base_rows[row]["probs"][label], abs=1e-5
            )


def test_generate_predictor_returns_text(adapters):
    p = Predictor(adapters["gpt2"], task="generate", device="cpu")
    p.add_adapter("g", adapters["g"])
    out = p.predict(["Say it again : the food was good"], ["g"])
    assert isinstance(out[0]["text"], str)


def test_errors_name_the_problem(adapters):
    p = Predictor(adapters["bert"], device="cpu")
    with pytest.raises(AdapterError, match="No adapter is loaded"):
        p.predict(["hello"], [None])
    p.add_adapter("a", adapters["a"])
    with pytest.raises(AdapterError, match="Unknown adapter"):
        p.predict(["hello"], ["zzz"])
    with pytest.raises(AdapterError, match="one name per text"):
        p.predict(["hello", "again"], ["a"])
    with pytest.raises(AdapterError, match="already"):
        p.add_adapter("a", adapters["a"])
    generate = Predictor(adapters["gpt2"], task="generate", device="cpu")
    with pytest.raises(AdapterError, match="task='classify'"):
        generate.add_adapter("c", adapters["c"])


def _tensor_bytes(model) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_base_bytes_count_the_bare_model_not_the_adapters(adapters):
    p = Predictor(adapters["bert"], device="cpu")
    p.add_adapter("a", adapters["a"])
    first = p.base_bytes()
    p.add_adapter("b", adapters["b"])
    p.add_adapter("a2", adapters["a"])  # vectors, heads and untuned twins: none of it is base
    assert p.base_bytes() == first
    bare = AutoModelForSequenceClassification.from_pretrained(adapters["bert"], num_labels=2)
    assert first == _tensor_bytes(bare)
    held = sum(p.adapter_bytes(n) for n in ("a", "b", "a2"))
    group = p._groups[p.adapters["a"]["group"]]
    ones = sum(t.numel() * t.element_size() for t in p._shared_ones.values())  # the twins'
    assert _tensor_bytes(group) == first + held + ones  # base and adapters: every tensor, once
