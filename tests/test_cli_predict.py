"""`ia3 predict`: a file in, the same format out with predictions; errors exit 2 plainly."""

import json

import pandas as pd
import pytest
import train_models as tm

from ia3engine import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-predict")
    bert = tm.save_tiny("bert", root / "bert")
    train = tm.write_sentiment(root / "train.csv", 32)
    adapter = root / "adapter"
    args = ["train", "--model", bert, "--data", train, "--steps", "2", "--batch-size", "8"]
    assert cli.main([*args, "--device", "cpu", "--out", str(adapter), "--json"]) == 0
    rows = root / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"review": t, "k": i}) + "\n"
            for i, (t, _) in enumerate(tm.sentiment_rows(5))
        )
    )
    return {"root": root, "bert": bert, "adapter": str(adapter), "rows": str(rows)}


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_predict_writes_the_rows_with_predictions_in_the_same_format(tiny, capsys):
    out = tiny["root"] / "scored.jsonl"
    args = ["predict", "--model", tiny["bert"], "--adapter", tiny["adapter"]]
    args += ["--data", tiny["rows"], "--out", str(out), "--batch-size", "2", "--device", "cpu"]
    assert cli.main([*args, "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["rows"] == 5 and summary["out"] == str(out) and summary["format"] == "jsonl"
    assert summary["text_column"] == "review" and summary["labels"] == ["negative", "positive"]
    written = pd.read_json(out, lines=True)
    assert list(written["k"]) == list(range(5))
    assert set(written["predicted_label"]) <= {"negative", "positive"}
    total = written["prob_negative"] + written["prob_positive"]
    assert total.tolist() == pytest.approx([1.0] * 5, abs=1e-5)


def test_the_model_defaults_to_the_adapters_base(tiny, capsys):
    args = ["predict", "--adapter", tiny["adapter"], "--data", tiny["rows"], "--device", "cpu"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "predicted 5 rows from column 'review'" in printed
    assert (tiny["root"] / "rows.predictions.jsonl").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "missing.csv"], "was not found"),
        (["--text-column", "body"], "Column 'body' not found"),
        (["--model", "MODEL:gpt2"], "This adapter was trained on"),
    ],
)
def test_errors_print_the_message_and_exit_2(tiny, capsys, extra, message):
    if "MODEL:gpt2" in extra:
        extra = ["--model", tm.save_tiny("gpt2", tiny["root"] / "gpt2")]
    args = ["predict", "--adapter", tiny["adapter"], "--data", tiny["rows"], "--device", "cpu"]
    assert cli.main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_neither_model_nor_adapter_is_refused(tiny, capsys):
    assert cli.main(["predict", "--data", tiny["rows"], "--json"]) == 2
    assert "Give --model" in _last_json(capsys.readouterr().out)["error"]
