"""A real studio for tests: `ia3 studio` in a subprocess with its own data directory and worker.

Used by the API test (through gradio_client) and the browser tests (through Chromium).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


class Studio:
    """A running studio: its URL, data directory and log file."""

    def __init__(self, url: str, data_dir: Path, log: Path):
        self.url, self.data_dir, self.log = url, data_dir, log

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the studio exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(
        f"the studio did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


@contextmanager
def running_studio(data_dir: Path, workers: int = 1):
    """`ia3 studio` on a free port with `workers` embedded worker processes."""
    port = _free_port()
    log = data_dir / "studio.log"
    env = dict(os.environ, IA3_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("IA3_DATABASE_URL", None)  # the studio's own SQLite file in data_dir
    command = [sys.executable, "-m", "app.cli", "studio", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--workers", str(workers)]
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, log)
        yield Studio(url, data_dir, log)
    finally:
        process.terminate()  # the studio stops its workers on the way out
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
