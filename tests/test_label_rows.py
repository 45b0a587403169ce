"""Label names as training rows (`label_rows`, on in `quick`): on an encoder, each label's name
trains as one row of its class beside the data when the names mean something to the body;
generative classification keeps its recipe."""

import argparse

import pytest
import torch
import train_models as tm
from datasets import Dataset

from ia3engine import TrainSpec, train
from ia3engine.cli import add_train_arguments, spec_from_args
from ia3engine.errors import SpecError
from ia3engine.training.label_prior import NAME_FRAME, label_name_rows, names_beat_chance
from ia3engine.training.loop import columns_with
from ia3engine.training.tasks import ChoiceClassify, EncoderClassify


def test_label_names_become_readable_rows_of_their_own_class():
    rows = label_name_rows(["very_negative", "  sci/tech ", "___", "positive"])
    framed = [NAME_FRAME.format(name) for name in ("very negative", "sci/tech", "positive")]
    assert rows == {"text": framed, "label": [0, 1, 3]}
    assert framed[0] == "This text is about very negative."  # a sentence, as the encoder reads


def test_names_must_sort_rows_better_than_their_guesses_shuffled():
    truth = torch.tensor([0, 0, 1, 1])
    assert names_beat_chance(torch.tensor([0, 0, 1, 1]), truth)
    assert names_beat_chance(torch.tensor([0, 0, 1, 0]), truth)  # 3 hits, 2 by chance
    assert not names_beat_chance(torch.tensor([0, 0, 0, 0]), truth)  # one guess for all: 2 = 2
    assert not names_beat_chance(torch.tensor([1, 1, 0, 0]), truth)
    # skewed data: always guessing the big class scores 3 of 4, which chance also gives
    assert not names_beat_chance(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))
    assert not names_beat_chance(torch.tensor([], dtype=torch.long), torch.tensor([]))


def test_extra_rows_follow_the_data_rows_column_by_column():
    data = Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]})
    assert columns_with(data) == {"text": ["a", "b"], "label": [1, 0]}
    both = columns_with(data, {"text": ["x", "y"], "label": [0, 1]})
    assert both == {"text": ["a", "b", "x", "y"], "label": [1, 0, 0, 1]}


def test_presets_choose_and_the_spec_checks_label_rows():
    assert TrainSpec(data="x.csv").resolved().label_rows is True
    assert TrainSpec(data="x.csv", preset="tfew").resolved().label_rows is False
    assert TrainSpec(data="x.csv", label_rows=False).resolved().label_rows is False
    with pytest.raises(SpecError, match="label_rows is 'yes'"):
        TrainSpec(data="x.csv", label_rows="yes").validate()


def test_the_command_line_turns_label_rows_off():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    on = spec_from_args(parser.parse_args(["--data", "x.csv"]))
    off = spec_from_args(parser.parse_args(["--data", "x.csv", "--no-label-rows"]))
    assert on.label_rows is None and off.label_rows is False


def _train_texts(monkeypatch, task_class, spec) -> tuple[list[str], list[dict]]:
    """The texts the run's loss saw, and its events."""
    seen, events = [], []
    original = task_class.batch

    def spy(self, rows):
        seen.extend(rows["text"])
        return original(self, rows)

    monkeypatch.setattr(task_class, "batch", spy)
    train(spec, on_event=events.append)
    return seen, events


def _write(path, rows) -> str:
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    return str(path)


def _named_rows(n: int = 8) -> list[tuple[str, str]]:
    """Rows that say their label's name: names a random tiny encoder can sort them by."""
    return [("good good movie", "good") if i % 2 else ("bad bad food", "bad") for i in range(n)]


def _framed(*names: str) -> set[str]:
    return {NAME_FRAME.format(name) for name in names}


def _spec(root, model, rows=None, **extra) -> TrainSpec:
    data = _write(root / "train.csv", rows or _named_rows())
    return TrainSpec(
        model=model,
        data=data,
        steps=6,
        batch_size=4,
        max_length=16,
        device="cpu",
        out_dir=str(root / "out"),
        **extra,
    )


def test_an_encoder_trains_on_its_label_names_and_says_so(tmp_path, monkeypatch):
    base = tm.save_tiny("bert", tmp_path / "bert")
    seen, events = _train_texts(monkeypatch, EncoderClassify, _spec(tmp_path, base))
    assert _framed("good", "bad") <= set(seen)
    started = next(e for e in events if e["type"] == "started")
    assert started["train_rows"] == 8  # the data's rows; the names are the recipe's
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any(
        "label's name also trains" in m and "'bad', 'good'" in m and "chance" in m for m in logs
    )


def test_the_gate_reads_the_bare_names_and_the_rows_train_framed(tmp_path, monkeypatch):
    """The frame is the same in every name row: read zero-shot, it would make ids ("0", "1")
    look like the data; so the names alone are read, and only the rows that train are framed."""
    embedded = []
    original = EncoderClassify.embed

    def spy(self, model, texts):
        embedded.append(list(texts))
        return original(self, model, texts)

    monkeypatch.setattr(EncoderClassify, "embed", spy)
    base = tm.save_tiny("bert", tmp_path / "bert")
    seen, _ = _train_texts(monkeypatch, EncoderClassify, _spec(tmp_path, base))
    assert ["bad", "good"] in embedded  # the gate's reading of the names
    assert not any(_framed("bad") & set(texts) for texts in embedded)
    assert _framed("good", "bad") <= set(seen)


def test_names_that_mean_nothing_to_the_body_do_not_train(tmp_path, monkeypatch):
    base = tm.save_tiny("bert", tmp_path / "bert")
    ids = [(text, "1" if label == "positive" else "0") for text, label in tm.sentiment_rows(8)]
    seen, events = _train_texts(monkeypatch, EncoderClassify, _spec(tmp_path, base, ids))
    assert seen and not _framed("0", "1") & set(seen)
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any("do not train as rows" in m and "no better than chance" in m for m in logs)


def test_label_rows_false_trains_on_the_data_alone(tmp_path, monkeypatch):
    base = tm.save_tiny("bert", tmp_path / "bert")
    spec = _spec(tmp_path, base, label_rows=False)
    seen, events = _train_texts(monkeypatch, EncoderClassify, spec)
    assert seen and not _framed("good", "bad") & set(seen)
    assert not any("label's name" in e.get("message", "") for e in events)


def test_generative_classification_keeps_its_recipe(tmp_path, monkeypatch):
    base = tm.save_tiny("gpt2", tmp_path / "gpt2")
    seen, events = _train_texts(monkeypatch, ChoiceClassify, _spec(tmp_path, base))
    assert seen and not _framed("good", "bad") & set(seen)
    assert not any("label names" in e.get("message", "") for e in events)
    assert not any("label's name" in e.get("message", "") for e in events)
