"""bench/fewshot.py's development protocol: recipes are chosen on rows of the training pool
(`--dev N`), never on the test file, and a recipe variant is named by `--spec` (TrainSpec
fields, checked by the engine before any run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package on the tests' path

from bench import fewshot  # noqa: E402


def _pool(n: int = 300) -> dict:
    return {
        "text": [f"row {i}" for i in range(n)],
        "label": ["a" if i % 3 else "b" for i in range(n)],
    }


def test_development_rows_are_one_fixed_draw_less_the_training_rows():
    pool = _pool()
    first = fewshot.few_shot(pool, 16, seed=0)
    second = fewshot.few_shot(pool, 16, seed=1)
    dev_first = fewshot.dev_rows(pool, first, 50)
    dev_second = fewshot.dev_rows(pool, second, 50)
    for chosen, dev in ((first, dev_first), (second, dev_second)):
        assert len(dev["text"]) == 50
        assert not set(dev["text"]) & set(chosen["text"])  # never a training row
        assert all(
            pool["label"][int(t.split()[1])] == y
            for t, y in zip(dev["text"], dev["label"], strict=True)
        )
    # the same draw for every run: what one run's training rows leave out, the other keeps
    kept = set(dev_first["text"]) & set(dev_second["text"])
    assert len(kept) >= 50 - 2 * 16
    assert fewshot.dev_rows(pool, first, 50) == dev_first  # reproducible
    assert len(fewshot.dev_rows(pool, first, 1000)["text"]) == 300 - 16  # at most the rest


def test_a_recipe_variant_is_checked_before_any_run(tmp_path):
    data = tmp_path / "pool.csv"
    data.write_text("text,label\nfine,a\nbad,b\n")
    assert fewshot.recipe(None, str(data)) == {}
    assert fewshot.recipe('{"steps": 240, "lr": 0.005}', str(data)) == {"steps": 240, "lr": 0.005}
    for text, named in (
        ("{steps: 240}", "not JSON"),
        ("[240]", "JSON object"),
        ('{"stepz": 240}', "stepz"),
        ('{"steps": -5}', "steps"),
        ('{"seed": 3, "data": "x.csv"}', "cannot set data, seed"),
    ):
        with pytest.raises(SystemExit, match=named):
            fewshot.recipe(text, str(data))


def test_dev_and_spec_reach_the_runs_and_the_title(tmp_path, monkeypatch, capsys):
    pool, test = tmp_path / "pool.csv", tmp_path / "test.csv"
    lines = "\n".join(f"pool row {i},{'a' if i % 2 else 'b'}" for i in range(120))
    pool.write_text("text,label\n" + lines + "\n")
    test.write_text("text,label\ntest row,a\nother test row,b\n")
    seen = []

    def run_default(rows, held, seed, work, overrides=None):
        seen.append((rows, held, overrides))
        return {"accuracy": 0.5, "train_s": 1, "step_cpu_s": 1, "cpu_s": 1, "wall_s": 1}

    monkeypatch.setattr(fewshot, "run_default", run_default)
    argv = ["--data", str(pool), "--eval", str(test), "--per-class", "4", "--seeds", "0", "1"]
    fewshot.main([*argv, "--methods", "default", "--dev", "20", "--spec", '{"steps": 30}'])
    assert len(seen) == 2
    for rows, held, overrides in seen:
        assert overrides == {"steps": 30}
        assert len(held["text"]) == 20 and all(t.startswith("pool row") for t in held["text"])
        assert not set(held["text"]) & set(rows["text"])
    out = capsys.readouterr().out
    assert 'pool.csv: 20 development rows of its pool (2 labels), default with {"steps": 30}' in out
    assert """--dev 20 --spec '{"steps": 30}'`""" in out  # the command pastes into a shell

    seen.clear()
    fewshot.main([*argv, "--methods", "default"])  # without --dev: the test file, as before
    assert all(held["text"] == ["test row", "other test row"] for _, held, _ in seen)


def test_a_pool_alone_loads_every_row_and_no_eval_rows(tmp_path):
    pool = tmp_path / "pool.csv"
    pool.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(40)))
    train, held = fewshot.load_files(str(pool))  # no test file: nothing is split off
    assert train["text"] == [f"row {i}" for i in range(40)]
    assert train["label"] == ["ab"[i % 2] for i in range(40)]
    assert held == {"text": [], "label": []}


def test_setfit_key0_zeroes_only_the_deepest_key_and_is_never_run_by_default(tiny_bert):
    """The diagnostic peer puts SetFit on the body our recipe starts from: the deepest layer's
    key projection at zero, every other weight as pre-trained."""
    body = AutoModel.from_pretrained(tiny_bert)
    before = {name: p.clone() for name, p in body.named_parameters()}
    names = fewshot.zero_deepest_key(body)
    deepest = body.config.num_hidden_layers - 1
    assert names == [f"encoder.layer.{deepest}.attention.self.key"]
    for name, param in body.named_parameters():
        if name.startswith(names[0] + "."):
            assert not param.any() and param.requires_grad
        else:
            assert torch.equal(param, before[name]), name
    assert "setfit_key0" not in fewshot.parse_args([]).methods
    assert fewshot.parse_args(["--methods", "setfit_key0"]).methods == ["setfit_key0"]


def test_setfit_key0_refuses_a_body_without_a_key_projection():
    with pytest.raises(SystemExit, match="no attention key projection"):
        fewshot.zero_deepest_key(torch.nn.Sequential(torch.nn.Linear(2, 2)))
