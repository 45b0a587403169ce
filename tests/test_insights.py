"""Validation insights: the arithmetic on hand-made predictions, the caps, and real runs that
carry insights before and after training (classification and generation)."""

import json

import pytest
import torch
import train_models as tm
from datasets import Dataset

from ia3engine import TrainSpec, train
from ia3engine.training import insights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = ["cat", "dog", "eel"]
# 8 rows: truth and the probabilities a model gave them (argmax is the prediction)
TRUTH = [0, 0, 0, 1, 1, 1, 2, 2]
PROBS = [
    [0.8, 0.1, 0.1],  # cat -> cat
    [0.6, 0.3, 0.1],  # cat -> cat
    [0.2, 0.7, 0.1],  # cat -> dog (0.7)
    [0.1, 0.8, 0.1],  # dog -> dog
    [0.5, 0.4, 0.1],  # dog -> cat (0.5)
    [0.05, 0.05, 0.9],  # dog -> eel (0.9)
    [0.1, 0.1, 0.8],  # eel -> eel
    [0.3, 0.3, 0.4],  # eel -> eel
]
TEXTS = [f"row {i}" for i in range(len(TRUTH))]


def _by_hand(truth, predicted, label):
    """Precision, recall, F1 as scikit-learn computes them (zero_division=0)."""
    tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
    fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
    fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def test_confusion_and_per_class_scores_match_a_hand_count():
    side = insights.classify_side(TEXTS, TRUTH, torch.tensor(PROBS), LABELS)
    assert side["confusion"] == [[2, 1, 0], [1, 1, 1], [0, 0, 2]]
    predicted = [max(range(3), key=row.__getitem__) for row in PROBS]
    for c, row in enumerate(side["per_class"]):
        precision, recall, f1 = _by_hand(TRUTH, predicted, c)
        assert row["label"] == LABELS[c]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == TRUTH.count(c)
    assert side["per_class"][0]["precision"] == pytest.approx(2 / 3)
    assert side["per_class"][2]["recall"] == pytest.approx(1.0)
    assert side["accuracy"] == pytest.approx(5 / 8)
    assert side["wrong_total"] == 3


def test_wrong_rows_come_most_confident_first_with_their_probabilities():
    wrong = insights.classify_side(TEXTS, TRUTH, PROBS, LABELS)["wrong"]
    assert [w["text"] for w in wrong] == ["row 5", "row 2", "row 4"]
    first = wrong[0]
    assert (first["true"], first["predicted"]) == ("dog", "eel")
    assert first["confidence"] == pytest.approx(0.9)
    assert first["probs"] == pytest.approx({"cat": 0.05, "dog": 0.05, "eel": 0.9})
    assert json.loads(json.dumps(wrong)) == wrong  # plain JSON


def test_a_class_never_predicted_scores_zero_not_an_error():
    side = insights.classify_side(["a", "b"], [0, 1], [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]], LABELS)
    eel = side["per_class"][2]
    assert (eel["precision"], eel["recall"], eel["f1"], eel["support"]) == (0.0, 0.0, 0.0, 0)
    dog = side["per_class"][1]
    assert (dog["precision"], dog["recall"]) == (0.0, 0.0)


def test_wrong_rows_and_texts_are_capped():
    n = insights.MAX_WRONG_ROWS + 30
    texts = ["x" * 1000] * n
    side = insights.classify_side(texts, [0] * n, [[0.1, 0.9, 0.0]] * n, LABELS)
    assert side["wrong_total"] == n
    assert len(side["wrong"]) == insights.MAX_WRONG_ROWS
    assert all(len(w["text"]) == insights.TEXT_CHARS for w in side["wrong"])
    assert side["wrong"][0]["text"].endswith("…")


def test_many_labels_keep_the_most_frequent_in_the_matrix_and_probabilities():
    n = insights.MAX_MATRIX_LABELS + 20
    labels = [f"l{i}" for i in range(n)]
    truth = [i % 5 for i in range(40)] + list(range(n))  # labels 0-4 are the frequent ones
    probs = []
    for t in truth:
        row = [0.5 / (n - 1)] * n
        row[(t + 1) % n] = 0.5  # always wrong: the next label
        probs.append(row)
    side = insights.classify_side([str(t) for t in truth], truth, probs, labels)
    kept = side["confusion_labels"]
    assert len(kept) == insights.MAX_MATRIX_LABELS and kept[:6] == labels[:6]
    assert len(side["confusion"]) == len(kept) and len(side["per_class"]) == n
    assert side["per_class"][0]["support"] == 9 and side["per_class"][1]["precision"] == 0.0
    top = side["wrong"][0]["probs"]
    assert len(top) == insights.MAX_PROBS and max(top.values()) == 0.5


def test_generation_rows_side_by_side_with_exact_match_per_row():
    side = insights.generate_side(
        ["p1", "p2", "p3"], ["yes", "no", "maybe"], [" yes ", "No", "maybe so"]
    )
    assert [r["exact_match"] for r in side["rows"]] == [True, False, False]
    assert side["rows"][0] == {
        "prompt": "p1",
        "reference": "yes",
        "generated": " yes ",
        "exact_match": True,
    }
    assert side["exact_match"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "bert": tm.save_tiny("bert", root / "bert", dropout=0.0),
        "gpt2": tm.save_tiny("gpt2", root / "gpt2"),
        "t5": tm.save_tiny("t5", root / "t5"),
        "train": tm.write_sentiment(root / "train.csv", 48),
        "eval": tm.write_sentiment(root / "eval.csv", 16, seed=1),
        "instructions": tm.write_instructions(root / "instructions.jsonl"),
        "more_instructions": tm.write_instructions(root / "more.jsonl", 60),  # 6 to validate
    }


def _spec(tmp_path, **values):
    base = dict(steps=6, lr=0.1, batch_size=8, warmup_ratio=0.0, max_length=32, device="cpu")
    base["val_fraction"] = 0.1  # tiny files: the default would hold no rows back to inspect
    return TrainSpec(**{**base, **values, "out_dir": str(tmp_path / "adapter")})


@pytest.mark.parametrize("model", ["bert", "gpt2"])  # a head; T-Few answer choices
def test_a_classifier_run_carries_insights_before_and_after(tiny, tmp_path, model):
    spec = _spec(tmp_path, model=tiny[model], data=tiny["train"], eval_data=tiny["eval"])
    result = train(spec)
    seen = result.insights
    assert seen is not None and result.insights_note is None
    assert seen["version"] == insights.SCHEMA_VERSION and seen["task"] == "classify"
    assert seen["labels"] == result.labels and seen["rows"] == seen["rows_total"] == 16
    assert seen["metrics_before"] == result.metrics_before and seen["metrics"] == result.metrics
    for side, metrics in (("before", result.metrics_before), ("after", result.metrics)):
        part = seen[side]
        assert sum(map(sum, part["confusion"])) == 16
        assert [r["support"] for r in part["per_class"]] == [8, 8]
        # the same validation rows and weights as the run's own evaluation
        assert part["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
        assert part["wrong_total"] == round(16 * (1 - metrics["accuracy"]))
        assert len(part["wrong"]) == part["wrong_total"]
    assert json.loads(json.dumps(seen)) == seen


@pytest.mark.parametrize("model", ["gpt2", "t5"])  # causal and seq2seq
def test_generation_runs_carry_prompts_references_and_generations(tiny, tmp_path, model):
    spec = _spec(tmp_path, model=tiny[model], task="generate", data=tiny["instructions"], steps=2)
    result = train(spec)
    seen = result.insights
    assert seen["task"] == "generate" and seen["labels"] == []
    rows = seen["after"]["rows"]
    assert len(rows) == seen["rows"] == seen["rows_total"] > 0
    assert rows[0]["prompt"].startswith("Say it again")
    assert len(seen["before"]["rows"]) == len(rows)
    for side in ("before", "after"):
        part = seen[side]
        hits = sum(r["exact_match"] for r in part["rows"])
        assert part["exact_match"] == pytest.approx(hits / len(rows))


def test_no_validation_rows_means_no_insights():
    empty = Dataset.from_dict({"text": [], "label": []})
    assert insights.measure(None, None, empty, 8) is None
    assert insights.combine(None, empty, None, None) is None


def test_a_stopped_run_has_no_insights_and_says_why(tiny, tmp_path):
    spec = _spec(tmp_path, model=tiny["bert"], data=tiny["train"], steps=4)
    result = train(spec, should_stop=lambda: True)
    assert result.stopped and result.insights is None
    assert result.insights_note == insights.STOPPED


def test_measure_caps_the_generated_rows(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(insights, "MAX_GENERATE_ROWS", 3)
    spec = _spec(
        tmp_path, model=tiny["gpt2"], task="generate", data=tiny["more_instructions"], steps=1
    )
    seen = train(spec).insights
    assert len(seen["after"]["rows"]) == len(seen["before"]["rows"]) == seen["rows"] == 3
    assert seen["rows_total"] > 3
