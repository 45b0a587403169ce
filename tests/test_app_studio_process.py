"""`ia3 studio` owns its embedded workers: they end with it, even when it is killed; and it
refuses to start with a job time limit it cannot read."""

import os
import signal
import subprocess
import sys

import pytest
from studio_support import ROOT, free_port, running_studio, wait_gone


def test_embedded_workers_end_when_the_studio_is_killed(tmp_path):
    with running_studio(tmp_path, workers=2) as studio:
        assert len([p for p in studio.workers if p]) >= 2
        os.kill(studio.process.pid, signal.SIGKILL)  # no chance to stop them itself
        studio.process.wait()
        assert wait_gone(studio.workers, timeout_s=30) == []


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("IA3_MAX_JOB_MINUTES", "two hours", "is not a positive number"),
        ("IA3_MAX_EVENTS_PER_USER", "lots", "is not a positive whole number"),
    ],
)
def test_a_studio_with_an_unreadable_limit_does_not_start(tmp_path, variable, value, says):
    env = dict(os.environ, IA3_DATA_DIR=str(tmp_path), **{variable: value})
    command = [sys.executable, "-m", "app.studio_cli", "--port", str(free_port()), "--no-worker"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{variable}={value!r} {says}" in done.stderr
    assert "Traceback" not in done.stderr
