"""bench/fewshot_table.py joins --record files from separate processes into the comparison table
docs/benchmarks.md shows: runs merged across files, the goal judged per size (beat at up to 16
per class, no worse above), CPU ratios, the paired difference over shared seeds, cells without a
peer marked, every seed listed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package on the tests' path

from bench import fewshot_table  # noqa: E402

TITLE = "pool.csv -> test.csv (2 labels, 1000 held-out rows)"


def _run(method: str, per_class: int, seed: int, accuracy: float, cpu: float) -> dict:
    return {
        "method": method,
        "shots": 2 * per_class,
        "seed": seed,
        "accuracy": accuracy,
        "cpu_s": cpu,
        "wall_s": cpu,
    }


def _record(*runs: dict) -> dict:
    return {TITLE: {f"{r['method']}/{r['shots']}/{r['seed']}": r for r in runs}}


def _row(text: str, size: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {size} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_runs_from_several_files_are_joined_and_judged_per_size(tmp_path, capsys):
    ours = _record(
        _run("default", 8, 0, 0.80, 30),
        _run("default", 8, 1, 0.70, 34),
        _run("default", 64, 0, 0.8125, 70),
        _run("default", 64, 1, 0.8125, 70),
    )
    theirs = _record(
        _run("setfit", 8, 0, 0.74, 50),
        _run("setfit", 8, 1, 0.74, 54),
        _run("setfit", 64, 0, 0.75, 500),
    )
    later = _record(_run("setfit", 64, 1, 0.875, 600))  # another process, another seed
    files = []
    for i, store in enumerate((ours, theirs, later)):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(store))
    fewshot_table.main([str(f) for f in files])
    text = capsys.readouterr().out
    assert text.startswith(f"#### {TITLE}")
    eight = _row(text, "8 per class")
    assert eight[1] == "0.750 ± 0.071 (2)" and eight[2] == "0.740 ± 0.000 (2)"
    assert eight[3] == "beat: **met**"
    assert eight[4:7] == ["32", "52", "0.62x"]
    # same draws: +0.06 on seed 0, -0.04 on seed 1
    assert eight[7] == "+0.010 ± 0.050 (ahead in 1 of 2)"
    sixty_four = _row(text, "64 per class")
    assert sixty_four[2] == "0.812 ± 0.088 (2)"  # both files' SetFit seeds
    assert sixty_four[3] == "no worse: **met**"  # a tie is no worse
    assert sixty_four[6] == "0.13x"
    assert sixty_four[7] == "+0.000 ± 0.062 (ahead in 1 of 2)"  # +0.0625 and -0.0625
    assert "- setfit 64 per class per seed: 0: 0.750, 1: 0.875" in text
    assert "- default 8 per class per seed: 0: 0.800, 1: 0.700" in text


def test_behind_is_not_met_and_a_missing_peer_is_not_measured():
    runs = _record(
        _run("default", 16, 0, 0.80, 60),
        _run("setfit", 16, 0, 0.80, 120),  # a tie at 16
        _run("default", 64, 0, 0.80, 60),
        _run("setfit", 64, 0, 0.81, 500),
        _run("default", 8, 0, 0.70, 30),
    )[TITLE]
    text = fewshot_table.comparison(TITLE, runs)
    assert _row(text, "16 per class")[3] == "beat: **not met**"  # a tie does not beat
    assert _row(text, "64 per class")[3] == "no worse: **not met**"
    eight = _row(text, "8 per class")
    assert eight[2:] == ["not measured", "beat: not measured", "30", "-", "-", "-"]
    assert _row(text, "64 per class")[7] == "-0.010 (ahead in 0 of 1)"  # one seed: no error


def test_a_later_file_replaces_the_same_run():
    first = _record(_run("default", 8, 0, 0.5, 30))
    second = _record(_run("default", 8, 0, 0.9, 30))
    joined = fewshot_table.join_records([first, second])
    assert [r["accuracy"] for r in joined[TITLE].values()] == [0.9]


def test_a_missing_or_foreign_record_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fewshot_table.main([str(tmp_path / "absent.json")])
    assert "no such record file" in capsys.readouterr().err
    for text in ("not json {", "[1, 2]"):
        (tmp_path / "other.json").write_text(text)
        with pytest.raises(SystemExit):
            fewshot_table.main([str(tmp_path / "other.json")])
        assert "other.json is not a --record file" in capsys.readouterr().err


def test_the_paired_difference_uses_only_the_seeds_both_ran():
    # seed 2 ran for ours only: it must not enter the difference
    runs = _record(
        _run("default", 8, 0, 0.80, 30),
        _run("default", 8, 1, 0.78, 30),
        _run("default", 8, 2, 0.10, 30),
        _run("setfit", 8, 0, 0.75, 50),
        _run("setfit", 8, 1, 0.76, 50),
    )[TITLE]
    found = fewshot_table.paired(runs, "default", "setfit", 16)
    assert found["n"] == 2 and found["ahead"] == 2
    assert found["mean"] == pytest.approx(0.035)
    assert found["error"] == pytest.approx(0.015)  # stdev(0.05, 0.02) / sqrt(2)
    assert fewshot_table.paired(runs, "default", "setfit", 32) is None
