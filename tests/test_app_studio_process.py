"""`ia3 studio` owns its embedded workers: they end with it, even when it is killed; and it
refuses to start with a job time limit it cannot read."""

import os
import signal
import subprocess
import sys

from studio_support import ROOT, free_port, running_studio, wait_gone


def test_embedded_workers_end_when_the_studio_is_killed(tmp_path):
    with running_studio(tmp_path, workers=2) as studio:
        assert len([p for p in studio.workers if p]) >= 2
        os.kill(studio.process.pid, signal.SIGKILL)  # no chance to stop them itself
        studio.process.wait()
        assert wait_gone(studio.workers, timeout_s=30) == []


def test_a_studio_with_an_unreadable_job_time_limit_does_not_start(tmp_path):
    env = dict(os.environ, IA3_DATA_DIR=str(tmp_path), IA3_MAX_JOB_MINUTES="two hours")
    command = [sys.executable, "-m", "app.studio_cli", "--port", str(free_port()), "--no-worker"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "IA3_MAX_JOB_MINUTES='two hours' is not a positive number" in done.stderr
