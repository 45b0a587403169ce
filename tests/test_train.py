"""train(): tasks on tiny models, events, stop and bit-identical resume, warm cache, PEFT loading."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import train_models as tm
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ia3engine import TrainSpec, train
from ia3engine.errors import DataError, SpecError
from ia3engine.serve.predict import Predictor
from ia3engine.training.loading import BaseCache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "root": root,
        "bert": tm.save_tiny("bert", root / "bert"),
        # The class-mean head start already fits the rows well; without dropout noise,
        # training must still drive the loss well below it.
        "bert_nodrop": tm.save_tiny("bert", root / "bert_nodrop", dropout=0.0),
        "gpt2": tm.save_tiny("gpt2", root / "gpt2"),
        "llama": tm.save_tiny("llama", root / "llama"),
        "t5": tm.save_tiny("t5", root / "t5"),
        "train": tm.write_sentiment(root / "train.csv", 48),
        "eval": tm.write_sentiment(root / "eval.csv", 16, seed=1),
        "instructions": tm.write_instructions(root / "instructions.jsonl"),
    }


def _spec(tiny, tmp_path, model="bert", **overrides):
    values = dict(
        model=tiny[model],
        data=tiny["train"],
        eval_data=tiny["eval"],
        steps=8,
        lr=0.1,
        head_lr=0.1,
        batch_size=8,
        eval_every=4,
        warmup_ratio=0.0,
        max_length=32,
        device="cpu",
        out_dir=str(tmp_path / "adapter"),
    )
    values.update(overrides)
    return TrainSpec(**values)


def _vectors(folder) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_encoder_classify_learns_and_emits_events_in_order(tiny, tmp_path):
    events = []
    spec = _spec(
        tiny,
        tmp_path,
        model="bert_nodrop",
        steps=48,
        eval_every=16,
        warmup_ratio=0.1,
        lr=0.1,
        head_lr=0.1,
        eval_data=tiny["train"],
    )
    result = train(spec, on_event=events.append)
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "finished"
    assert all("time" in e for e in events)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 49))
    for key in ("total_steps", "loss", "lr", "examples_per_s", "eta_s"):
        assert key in steps[0]
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals if not e.get("before")] == [16, 32, 48]
    assert [e["metrics"] for e in evals if e.get("before")] == [result.metrics_before]
    assert result.metrics["loss"] < result.metrics_before["loss"]
    assert result.labels == ["negative", "positive"] and result.steps == 48
    assert not result.stopped and result.trainable_params > 0


def test_adapter_folder_has_peft_files_card_and_training_info(tiny, tmp_path):
    result = train(_spec(tiny, tmp_path, steps=2))
    folder = tmp_path / "adapter"
    assert folder == tmp_path / "adapter" and result.adapter_dir == str(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and "classifier" in config["modules_to_save"]
    info = json.loads((folder / "training_info.json").read_text())
    for key in ("task", "kind", "labels", "template", "text_column", "label_column", "base_model"):
        assert key in info
    assert info["kind"] == "encoder" and info["metrics"] == result.metrics
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and "- ia3" in card
    assert "PeftModel.from_pretrained" in card and "Predictor(" in card


@pytest.mark.parametrize("model", ["gpt2", "llama", "t5"])
def test_generative_classify_trains_tfew_way_and_ranks_choices(tiny, tmp_path, model):
    spec = _spec(tiny, tmp_path, model=model, steps=16, eval_every=0, eval_data=tiny["train"])
    result = train(spec)
    assert result.metrics["loss"] < result.metrics_before["loss"]
    info = json.loads((tmp_path / "adapter" / "training_info.json").read_text())
    assert info["kind"] == ("seq2seq" if model == "t5" else "causal")
    assert "{options}" in info["prompt"]


@pytest.mark.parametrize("model", ["gpt2", "t5"])
def test_generate_reports_loss_and_exact_match(tiny, tmp_path, model):
    spec = _spec(
        tiny,
        tmp_path,
        model=model,
        task="generate",
        data=tiny["instructions"],
        eval_data=None,
        val_fraction=0.25,  # 24 rows: the default would hold none back
    )
    result = train(spec)
    assert set(result.metrics) >= {"loss", "exact_match"}
    assert result.metrics["loss"] < result.metrics_before["loss"]
    assert result.labels == []


def test_early_stopping_stops_after_patience_evaluations_without_gain(tiny, tmp_path):
    events = []
    # a learning rate too small to change anything: every evaluation ties the first
    spec = _spec(tiny, tmp_path, steps=20, lr=1e-9, head_lr=1e-9, eval_every=1)
    spec.early_stopping_patience = 2
    result = train(spec, on_event=events.append)
    assert result.steps == 3 and not result.stopped
    assert any(e["type"] == "log" and "Early stop" in e["message"] for e in events)


def test_bad_data_emits_failed_with_the_message(tiny, tmp_path):
    events = []
    bad = tmp_path / "empty.csv"
    bad.write_text("")
    with pytest.raises(DataError):
        train(_spec(tiny, tmp_path, data=str(bad)), on_event=events.append)
    assert events[-1]["type"] == "failed" and events[-1]["message"]


def test_should_stop_stops_within_one_step_and_keeps_a_small_checkpoint(tiny, tmp_path):
    polls = []
    events = []

    def stop():
        polls.append(1)
        return len(polls) > 3

    result = train(
        _spec(tiny, tmp_path),
        on_event=events.append,
        should_stop=stop,
        checkpoint_dir=tmp_path / "ck",
    )
    assert result.stopped and result.steps == 3
    checkpoint = tmp_path / "ck" / "checkpoint.pt"
    assert checkpoint.is_file() and checkpoint.stat().st_size < 200_000
    assert any(e["type"] == "checkpoint" and e["step"] == 3 for e in events)


def test_a_model_with_fewer_positions_than_max_length_reads_what_it_can(tiny, tmp_path):
    # the tiny BERT has 128 positions; a longer text must be cut there, not overflow the table
    data = tmp_path / "long.csv"
    rows = ["text,label"] + [f"{'the food was good ' * 60},positive", "the book was bad,negative"]
    data.write_text("\n".join(rows) + "\n")
    events = []
    spec = _spec(tiny, tmp_path, data=str(data), eval_data=str(data), max_length=512, steps=2)
    result = train(spec, on_event=events.append)
    assert result.steps == 2
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any("cut at 128 tokens" in m and "asks for 512" in m for m in logs), logs


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_ends_bit_identical_to_an_uninterrupted_run(tiny, tmp_path, grad_accum):
    # with 2 micro-batches the pair objective replays each one's dropout in a second forward
    whole = train(_spec(tiny, tmp_path / "whole", eval_every=3, grad_accum=grad_accum))
    calls = []
    cut = _spec(tiny, tmp_path / "cut", eval_every=3, grad_accum=grad_accum)
    stopped = train(
        cut, should_stop=lambda: calls.append(1) or len(calls) > 5, checkpoint_dir=tmp_path / "ck"
    )
    assert stopped.stopped and stopped.steps == 5
    resumed = train(cut, checkpoint_dir=tmp_path / "ck")
    assert resumed.steps == 8 and not resumed.stopped
    a = _vectors(tmp_path / "whole" / "adapter")
    b = _vectors(tmp_path / "cut" / "adapter")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == whole.metrics


def test_checkpoint_from_other_settings_is_refused(tiny, tmp_path):
    calls = []
    train(
        _spec(tiny, tmp_path),
        should_stop=lambda: calls.append(1) or len(calls) > 2,
        checkpoint_dir=tmp_path / "ck",
    )

    with pytest.raises(SpecError, match="different settings"):
        train(_spec(tiny, tmp_path, lr=0.05), checkpoint_dir=tmp_path / "ck")


def test_resume_follows_the_data_content_not_its_path(tiny, tmp_path):
    # a worker on another machine resumes with the same file stored under another data dir

    calls = []
    train(
        _spec(tiny, tmp_path / "a"),
        should_stop=lambda: calls.append(1) or len(calls) > 2,
        checkpoint_dir=tmp_path / "ck",
    )
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    train_copy = Path(shutil.copy(tiny["train"], moved / "train.csv"))
    eval_copy = shutil.copy(tiny["eval"], moved / "eval.csv")
    shutil.copytree(tmp_path / "ck", tmp_path / "ck2")
    resumed = train(
        _spec(tiny, tmp_path / "b", data=str(train_copy), eval_data=eval_copy),
        checkpoint_dir=tmp_path / "ck",
    )
    assert resumed.steps == 8
    train_copy.write_text(train_copy.read_text() + "one more row,positive\n")
    with pytest.raises(SpecError, match="data_fingerprint"):
        train(
            _spec(tiny, tmp_path / "c", data=str(train_copy), eval_data=eval_copy),
            checkpoint_dir=tmp_path / "ck2",
        )


def test_warm_cache_reuses_the_base_and_matches_a_cold_run(tiny, tmp_path):
    cache = BaseCache()
    cold = train(_spec(tiny, tmp_path / "cold", steps=3))
    train(_spec(tiny, tmp_path / "first", steps=3, seed=5), base_cache=cache)
    warm = train(_spec(tiny, tmp_path / "warm", steps=3), base_cache=cache)
    assert cache.loads == 1
    a, b = _vectors(tmp_path / "cold" / "adapter"), _vectors(tmp_path / "warm" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert warm.metrics == cold.metrics


def test_saved_adapter_loads_in_peft_and_predicts_the_same(tiny, tmp_path):
    train(_spec(tiny, tmp_path, steps=6))
    folder = tmp_path / "adapter"
    texts = [text for text, _ in tm.sentiment_rows(12, seed=3)]
    ours = Predictor(tiny["bert"], device="cpu")
    ours.add_adapter("mine", folder)
    predicted = ours.predict(texts, ["mine"] * len(texts))

    base = AutoModelForSequenceClassification.from_pretrained(tiny["bert"], num_labels=2)
    peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny["bert"])
    with torch.no_grad():
        logits = peft_model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    probs = torch.softmax(logits, dim=-1)
    labels = ["negative", "positive"]
    assert [p["label"] for p in predicted] == [labels[i] for i in probs.argmax(-1).tolist()]
    ours_probs = torch.tensor([[p["probs"][n] for n in labels] for p in predicted])
    assert torch.allclose(ours_probs, probs, atol=1e-5)
