"""The real `ia3` command in a subprocess: with --json, stdout is exactly one JSON document for
every command, and no command prints Alembic's INFO lines (on a new database or after)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jobs_support
import pytest
import train_models as tm
from sqlalchemy import create_engine

from jobs.db import head_revision, migrate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ia3(tmp_path):
    """Runs `python -m app.cli ARGS` on a fresh data folder; returns (code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IA3_")}
    env |= {"IA3_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}

    def run(*argv):
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *[str(a) for a in argv]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for stream in (done.stdout, done.stderr):
            assert "alembic" not in stream.lower(), stream
        return done.returncode, done.stdout, done.stderr

    return run


def _one(stdout: str):
    """The one JSON document stdout holds (json.loads refuses anything after it)."""
    return json.loads(stdout)


def test_every_json_command_prints_one_document(ia3, tmp_path):
    base = tm.save_tiny("bert", tmp_path / "tiny-bert")
    data = jobs_support.write_reviews(tmp_path / "reviews.csv")
    tiny = ["--model", base, "--data", data, "--steps", 2, "--batch-size", 8, "--max-length", 16]

    code, out, err = ia3("jobs", "list", "--json")  # a new database: its tables are created
    assert code == 0 and _one(out) == []
    assert "Created the database's tables" in err and len(err.strip().splitlines()) == 1

    code, out, err = ia3("submit", *tiny, "--name", "one", "--json")
    job_id = _one(out)["id"]
    assert code == 0
    assert _one(ia3("jobs", "cancel", job_id, "--json")[1])["status"] == "cancelled"
    assert _one(ia3("jobs", "retry", job_id, "--json")[1]) == {"id": job_id}
    assert _one(ia3("worker", "--once", "--json", "--device", "cpu")[1])["ran"] is True
    assert _one(ia3("jobs", "show", job_id, "--json")[1])["status"] == "done"
    assert [j["id"] for j in _one(ia3("jobs", "list", "--json")[1])] == [job_id]
    events = _one(ia3("jobs", "logs", job_id, "--json")[1])
    assert {"started", "step", "eval"} <= {e["type"] for e in events}

    (adapter,) = _one(ia3("adapters", "list", "--json")[1])
    assert _one(ia3("adapters", "show", adapter["id"], "--json")[1])["name"] == "one"
    saved = _one(
        ia3("adapters", "download", adapter["id"], "--out", tmp_path / "a.zip", "--json")[1]
    )
    again = _one(ia3("adapters", "import", saved["path"], "--name", "two", "--json")[1])["id"]
    assert _one(ia3("adapters", "rename", again, "three", "--json")[1])["name"] == "three"
    assert _one(ia3("adapters", "delete", again, "--json")[1])["deleted"] is True

    code, out, err = ia3("jobs", "show", 999, "--json")
    assert code == 1 and "No job with id 999" in _one(out)["error"]


def test_train_and_eval_json_print_one_object(ia3, tmp_path):
    bert = tm.save_tiny("bert", tmp_path / "bert")
    train = tm.write_sentiment(tmp_path / "train.csv", 32)
    out_dir = tmp_path / "adapter"
    code, out, _ = ia3(
        "train",
        "--model",
        bert,
        "--data",
        train,
        "--steps",
        2,
        "--batch-size",
        8,
        "--device",
        "cpu",
        "--out",
        out_dir,
        "--json",
    )
    assert code == 0 and _one(out)["adapter_dir"] == str(out_dir)
    code, out, _ = ia3(
        "eval", "--model", bert, "--adapter", out_dir, "--data", train, "--device", "cpu", "--json"
    )
    assert code == 0 and 0.0 <= _one(out)["eval"]["accuracy"] <= 1.0
    code, out, err = ia3("train", "--data", tmp_path / "missing.csv", "--json")
    assert code == 2 and "missing.csv" in _one(out)["error"] and "Traceback" not in err


def test_an_upgrade_says_one_line_and_a_current_database_nothing(tmp_path, caplog):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0003")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        migrate(engine)
        migrate(engine)
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [
        (
            "jobs.db",
            f"Upgraded the database's schema from 0003 to {head_revision()} in {engine.url}",
        )
    ]
    engine.dispose()
