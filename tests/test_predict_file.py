"""Predicting a whole file: rows kept, predictions added, the input's format kept, bounds,
progress and stop, and clear refusals (a tiny BERT, a tiny GPT-2 and the real MiniLM)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import train_models as tm

from ia3engine import TrainSpec, train
from ia3engine.errors import AdapterError, DataError, ModelLoadError
from ia3engine.serve.predict import Predictor
from ia3engine.serve.predict_file import _inert, predict_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COMMON = dict(steps=3, lr=0.2, head_lr=0.2, batch_size=8, eval_every=0, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-file")
    found = {
        "bert": tm.save_tiny("bert", root / "bert"),
        "gpt2": tm.save_tiny("gpt2", root / "gpt2"),
    }
    data = tm.write_sentiment(root / "train.csv", 32)
    for name, model, source, task in (
        ("classify", "bert", data, "classify"),
        ("generate", "gpt2", tm.write_instructions(root / "i.jsonl"), "generate"),
    ):
        folder = root / name
        train(TrainSpec(model=found[model], data=source, task=task, out_dir=str(folder), **COMMON))
        found[name] = str(folder)
    return found


def rows_frame(n: int = 7) -> pd.DataFrame:
    rows = tm.sentiment_rows(n, seed=3)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "review": [text for text, _ in rows],
            "note": ["x" if i % 2 else "" for i in range(n)],
        }
    )


def write(frame: pd.DataFrame, path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def read(path) -> pd.DataFrame:
    text = str(path)
    if text.endswith(".csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if text.endswith(".jsonl"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_rows_come_back_in_their_own_format_with_label_and_probabilities(models, tmp_path, ext):
    frame = rows_frame()
    data = write(frame, tmp_path / f"in{ext}")
    result = predict_file(None, data, adapter=models["classify"], batch_size=3, device="cpu")
    assert result.out_path == str(tmp_path / f"in.predictions{ext}")
    assert (result.rows, result.total_rows, result.text_column) == (7, 7, "review")
    out = read(result.out_path)
    assert list(out.columns) == [
        "id",
        "review",
        "note",
        "predicted_label",
        "prob_negative",
        "prob_positive",
    ]
    assert list(out["id"]) == list(frame["id"]) and list(out["review"]) == list(frame["review"])
    probs = out[["prob_negative", "prob_positive"]].astype(float)
    assert probs.sum(axis=1).tolist() == pytest.approx([1.0] * 7, abs=1e-5)
    best = probs.idxmax(axis=1).str.removeprefix("prob_")
    assert list(out["predicted_label"]) == list(best)
    # The same answers as the Predictor gives text by text.
    alone = Predictor(models["bert"], device="cpu")
    alone.add_adapter("a", models["classify"])
    want = alone.predict(list(frame["review"]), ["a"] * 7)
    assert list(out["predicted_label"]) == [w["label"] for w in want]
    assert probs["prob_positive"].tolist() == pytest.approx(
        [w["probs"]["positive"] for w in want], abs=1e-5
    )


def test_generation_writes_generated_text_bounded_by_max_new_tokens(models, tmp_path):
    prompts = [f"Say it again : {text}" for text, _ in tm.sentiment_rows(5)]
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p, "n": i}) + "\n" for i, p in enumerate(prompts))
    )
    out = tmp_path / "answers.jsonl"
    result = predict_file(
        models["gpt2"],
        data,
        out,
        adapter=models["generate"],
        max_new_tokens=3,
        batch_size=2,
        device="cpu",
    )
    assert result.task == "generate" and result.out_path == str(out)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in written] == prompts and [r["n"] for r in written] == list(range(5))
    tokenizer = tm.tokenizer("gpt2")
    for row in written:
        assert isinstance(row["generated_text"], str)
        assert len(tokenizer(row["generated_text"], add_special_tokens=False)["input_ids"]) <= 3


def test_the_base_alone_generates_and_an_encoder_alone_is_refused(models, tmp_path):
    data = write(rows_frame(3), tmp_path / "in.csv")
    result = predict_file(models["gpt2"], data, max_new_tokens=2, device="cpu")
    assert result.task == "generate"
    assert len(read(result.out_path)["generated_text"]) == 3
    labelled = predict_file(
        models["gpt2"], data, tmp_path / "l.csv", labels=["bad", "good"], device="cpu"
    )
    probs = read(labelled.out_path)[["prob_bad", "prob_good"]].astype(float)
    assert probs.sum(axis=1).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    with pytest.raises(ModelLoadError, match="encoder"):
        predict_file(models["bert"], data, tmp_path / "x.csv", device="cpu")
    with pytest.raises(AdapterError, match="encoder"):
        predict_file(models["bert"], data, tmp_path / "x.csv", labels=["a", "b"], device="cpu")


def test_progress_is_reported_and_a_stop_writes_nothing(models, tmp_path):
    data = write(rows_frame(7), tmp_path / "in.csv")
    seen = []
    result = predict_file(
        None,
        data,
        adapter=models["classify"],
        batch_size=3,
        on_progress=lambda done, total: seen.append((done, total)),
        device="cpu",
    )
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)] and not result.stopped
    asked = []
    stopped = predict_file(
        None,
        data,
        tmp_path / "stopped.csv",
        adapter=models["classify"],
        batch_size=3,
        should_stop=lambda: asked.append(1) or len(asked) > 1,
        device="cpu",
    )
    assert stopped.stopped and stopped.rows == 3 and stopped.out_path is None
    assert not (tmp_path / "stopped.csv").exists()


def test_bad_inputs_are_refused_with_the_problem_and_the_fix(models, tmp_path):
    data = write(rows_frame(7), tmp_path / "in.csv")
    adapter = models["classify"]
    with pytest.raises(DataError, match="was not found"):
        predict_file(None, tmp_path / "missing.csv", adapter=adapter)
    with pytest.raises(DataError, match="Did you mean 'review'"):
        predict_file(None, data, adapter=adapter, text_column="reveiw")
    with pytest.raises(DataError, match="cap of 5 rows"):
        predict_file(None, data, adapter=adapter, max_rows=5)
    with pytest.raises(DataError, match=r"Name it 'out\.csv'"):
        predict_file(None, data, tmp_path / "out.parquet", adapter=adapter)
    with pytest.raises(DataError, match="max_new_tokens must be 1 to 512"):
        predict_file(None, data, adapter=adapter, max_new_tokens=10_000)
    with pytest.raises(DataError, match="is the input file"):
        predict_file(None, data, data, adapter=adapter)
    with pytest.raises(AdapterError, match=f"trained on '{models['bert']}'"):
        predict_file(models["gpt2"], data, adapter=adapter, device="cpu")


def test_long_texts_are_cut_and_formula_answers_made_inert_in_csv(models, tmp_path):
    frame = pd.DataFrame({"text": ["the food was good " * 60, "the book was bad"]})
    data = write(frame, tmp_path / "in.csv")
    result = predict_file(None, data, adapter=models["classify"], device="cpu")
    assert result.truncated == 1 and any("cut, as in training" in w for w in result.warnings)
    out = read(result.out_path)
    assert list(out["text"]) == list(frame["text"])  # the input itself is never changed
    assert [_inert(v) for v in ("=cmd|x", "@SUM(1)", "+x", "-1", "+0.5", "fine")] == [
        "'=cmd|x",
        "'@SUM(1)",
        "'+x",
        "-1",
        "+0.5",
        "fine",
    ]


def test_a_minilm_adapter_predicts_a_file(minilm_path, tmp_path):
    data = tm.write_sentiment(tmp_path / "train.csv", 16)
    folder = tmp_path / "minilm-adapter"
    spec = TrainSpec(model=minilm_path, data=data, out_dir=str(folder), max_length=32, **COMMON)
    train(spec)
    rows = write(rows_frame(4), tmp_path / "rows.parquet")
    result = predict_file(minilm_path, rows, adapter=str(folder), device="cpu")
    out = read(result.out_path)
    assert len(out) == 4 and list(out["id"]) == ["r0", "r1", "r2", "r3"]
    probs = out[["prob_negative", "prob_positive"]].astype(float)
    assert probs.sum(axis=1).tolist() == pytest.approx([1.0] * 4, abs=1e-5)
