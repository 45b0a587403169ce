"""`ia3 submit`, `ia3 jobs ...`, `ia3 adapters ...` and `ia3 worker --once` end to end."""

from __future__ import annotations

import argparse
import json
import zipfile

import jobs_support
import pytest
from train_models import save_tiny

from jobs import cli
from jobs.db import dispose_engines


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """Runs one command line against a fresh SQLite database; returns (code, stdout, stderr)."""
    monkeypatch.setenv("IA3_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IA3_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    parser = argparse.ArgumentParser(prog="ia3")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))

    def invoke(*argv):
        args = parser.parse_args([str(a) for a in argv])
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke

    dispose_engines()


@pytest.fixture
def tiny(tmp_path):
    base = save_tiny("bert", tmp_path / "tiny-bert")
    data = jobs_support.write_reviews(tmp_path / "reviews.csv")
    return ["--model", base, "--data", data, "--steps", 4, "--batch-size", 8, "--max-length", 16]


def test_submit_run_and_inspect_a_job(run, tiny, tmp_path):
    code, out, _ = run("submit", *tiny, "--name", "cli-job", "--owner", "ann")
    job_id = int(out)
    assert code == 0
    code, out, _ = run("jobs", "list", "--json")
    assert [j["id"] for j in json.loads(out)] == [job_id] and json.loads(out)[0]["owner"] == "ann"
    code, out, _ = run("worker", "--once", "--json")
    assert json.loads(out)["ran"] is True
    code, out, _ = run("jobs", "show", job_id)
    assert f"Job {job_id}: done" in out and "adapter" in out
    code, out, _ = run("jobs", "logs", job_id)
    assert "step 4/4" in out and "started" in out
    adapter_id = json.loads(run("jobs", "show", job_id, "--json")[1])["adapter_id"]

    code, out, _ = run("adapters", "list")
    assert "cli-job" in out and "classify" in out
    target = tmp_path / "out" / "a.zip"
    assert run("adapters", "download", adapter_id, "--out", target)[0] == 0
    assert "adapter_model.safetensors" in zipfile.ZipFile(target).namelist()
    code, out, _ = run("adapters", "import", target, "--name", "again", "--json")
    again = json.loads(out)["id"]
    assert run("adapters", "rename", again, "copy")[0] == 0
    assert json.loads(run("adapters", "show", again, "--json")[1])["name"] == "copy"
    assert run("adapters", "delete", again)[0] == 0
    assert [a["id"] for a in json.loads(run("adapters", "list", "--json")[1])] == [adapter_id]


def test_cancel_retry_and_errors_print_messages_not_tracebacks(run, tiny):
    job_id = int(run("submit", *tiny)[1])
    assert "cancelled" in run("jobs", "cancel", job_id)[1]
    assert "back in the queue" in run("jobs", "retry", job_id)[1]
    code, out, err = run("jobs", "retry", job_id, "--json")
    assert code == 1 and "only failed or cancelled" in json.loads(out)["error"]
    code, _, err = run("submit", *tiny, "--steps", 0, "--lr", -1)
    assert code == 1 and "steps" in err and "lr" in err and "Traceback" not in err
    code, _, err = run("jobs", "show", 999)
    assert code == 1 and "No job with id 999" in err
    code, _, err = run("adapters", "delete", 5)
    assert code == 1 and "No adapter with id 5" in err
