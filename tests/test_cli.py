"""`train` and `eval` commands: --json output, error exit codes, the MiniLM demo."""

import io
import json
import re

import pytest
import train_models as tm

from ia3engine import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "root": root,
        "bert": tm.save_tiny("bert", root / "bert"),
        "train": tm.write_sentiment(root / "train.csv", 32),
        "eval": tm.write_sentiment(root / "eval.csv", 12, seed=1),
    }


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _train_args(tiny, out_dir, *extra) -> list[str]:
    """A two-step `ia3 train --json` on the tiny BERT, on the CPU."""
    common = ["--model", tiny["bert"], "--data", tiny["train"], "--steps", "2"]
    common += ["--batch-size", "8", "--device", "cpu", "--out", str(out_dir), "--json"]
    return ["train", *common, *extra]


def test_train_json_prints_one_object_last(tiny, capsys):
    out_dir = tiny["root"] / "adapter"
    code = cli.main(_train_args(tiny, out_dir, "--eval-data", tiny["eval"]))
    assert code == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["adapter_dir"] == str(out_dir)
    assert 0.0 <= summary["eval"]["accuracy"] <= 1.0
    assert summary["train_seconds"] >= 0 and summary["steps"] == 2
    assert (out_dir / "adapter_model.safetensors").is_file()


def test_eval_scores_an_adapter_and_the_base_alone(tiny, capsys):
    out_dir = tiny["root"] / "scored"
    cli.main(_train_args(tiny, out_dir, "--val-fraction", "0.25"))
    trained = _last_json(capsys.readouterr().out)
    args = ["eval", "--model", tiny["bert"], "--data", tiny["eval"], "--device", "cpu", "--json"]
    assert cli.main(args + ["--adapter", str(out_dir)]) == 0
    with_adapter = _last_json(capsys.readouterr().out)
    assert with_adapter["eval"]["rows"] == 12 and "accuracy" in with_adapter["eval"]
    assert trained["eval"]["accuracy"] >= 0
    assert cli.main(args) == 0
    alone = _last_json(capsys.readouterr().out)
    assert alone["adapter"] is None and "accuracy" in alone["eval"]


def test_errors_print_the_message_and_exit_2_without_traceback(tiny, tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path / "missing.csv"), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code = cli.main(["eval", "--model", str(tmp_path / "nowhere"), "--data", tiny["eval"]])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("error:")


def test_progress_bar_shows_step_loss_and_eta():
    stream = io.StringIO()
    bar = cli.ProgressBar(enabled=True, width=10, stream=stream)
    bar.on_event({"type": "step", "step": 5, "total_steps": 10, "loss": 0.5, "eta_s": 75})
    assert re.search(r"\[#####\.\.\.\.\.\] 5/10\s+loss 0\.5000\s+ETA 1:15", stream.getvalue())


def test_demo_on_minilm_improves_accuracy(tmp_path, capsys):
    code = cli.main(["train", "--demo", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0
    before = float(re.search(r"accuracy before training: ([\d.]+)", out).group(1))
    after = float(re.search(r"accuracy after training:\s+([\d.]+)", out).group(1))
    assert after > before and after > 0.75


def test_train_without_validation_rows_says_how_to_get_a_score(tiny, capsys):
    out_dir = tiny["root"] / "unscored"
    args = ["train", "--model", tiny["bert"], "--data", tiny["train"], "--steps", "1"]
    assert cli.main([*args, "--device", "cpu", "--out", str(out_dir)]) == 0
    shown = capsys.readouterr().out
    assert "no validation rows, so no score" in shown and "--eval-data" in shown
    assert "validation metrics: {}" not in shown
