"""A real studio for tests: `ia3 studio` in a subprocess with its own data directory and worker.

Used by the API test (through gradio_client) and the browser tests (through Chromium).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from base64 import b64encode
from contextlib import contextmanager
from pathlib import Path

import httpx
import itsdangerous
from waiting import wait_for

from app import inference
from app.model_pool import PredictorPool
from app.serve_settings import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 240  # a short job on a tiny model, on a busy 2-core machine


class Studio:
    """A running studio: its URL, data directory and log file."""

    def __init__(self, url, data_dir: Path, log: Path, process=None, workers=()):
        self.url, self.data_dir, self.log = url, data_dir, log
        self.process, self.workers = process, list(workers)  # the studio and its workers

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


SPACE_SECRET = "space-oauth-secret"
SPACE = {  # what a Hugging Face Space with "hf_oauth: true" sets for the studio
    "SYSTEM": "spaces",
    "SPACE_ID": "team/ia3-studio",
    "OAUTH_CLIENT_ID": "client-id",
    "OAUTH_CLIENT_SECRET": SPACE_SECRET,
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


def hub_session(name: str, secret: str = SPACE_SECRET, expires_in: float | None = 3600) -> str:
    """The `session` cookie Gradio's SessionMiddleware sets after a Hugging Face sign-in on a
    Space (gradio/oauth.py signs it so); `expires_in=None` leaves out the expiry."""

    info = {
        "access_token": "hf_oauth_token",
        "scope": "openid profile",
        "userinfo": {
            "preferred_username": name,
            "name": name.title(),
            "profile": f"https://huggingface.co/{name}",
            "picture": "",
        },
    }
    if expires_in is not None:
        info["expires_at"] = time.time() + expires_in
    key = hashlib.sha256((secret + "-v4").encode()).hexdigest()
    data = b64encode(json.dumps({"oauth_info": info}).encode())
    return itsdangerous.TimestampSigner(key).sign(data).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(
    probe_url: str, process: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Until the server answers `probe_url` with anything but a server error (a login wall
    counts as up); fails with the log's tail if the process exits or time runs out."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the studio exited early:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(probe_url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(
        answers,
        timeout_s,
        lambda: f"the studio to answer {probe_url}:\n{log.read_text()[-3000:]}",
        poll_s=0.3,
    )


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """Wait for `pids` to end; returns those still alive after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@contextmanager
def running_studio(data_dir: Path, workers: int = 1, env: dict[str, str] | None = None):
    """`ia3 studio` on a free port with `workers` embedded worker processes; `env` adds
    variables (IA3_USERS for password sign-in, ...)."""
    port = free_port()
    log = data_dir / "studio.log"
    extra = env or {}
    env = dict(os.environ, IA3_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("IA3_DATABASE_URL", None)  # the studio's own SQLite file in data_dir
    env.update(extra)
    command = [sys.executable, "-m", "app.cli", "studio", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--workers", str(workers)]
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    workers: list[int] = []
    try:
        wait_until_up(url + "config", process, log)
        workers = children(process.pid)
        yield Studio(url, data_dir, log, process, workers)
    finally:
        process.terminate()  # the studio stops its workers on the way out
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        left = wait_gone(workers)
        for pid in left:
            os.kill(pid, 9)
    assert not left, f"worker processes {left} outlived the studio:\n{log.read_text()[-3000:]}"


def wait_done(client, job_id, studio) -> dict:
    """The job's status once it ends through the API (`client`); fails unless it is done."""

    def ended():
        job = client.predict(job_id, api_name="/job_status")
        return job if job["status"] in ("done", "failed", "cancelled") else None

    job = wait_for(
        ended, JOB_TIMEOUT_S, lambda: f"job {job_id} to end:\n{studio.log_tail()}", poll_s=0.5
    )
    assert job["status"] == "done", f"{job['message']}\n{studio.log_tail()}"
    return job


@contextmanager
def inference_servers():
    """A factory of InferenceServers, each on its own PredictorPool (settings as keywords),
    all closed on exit."""
    pools = []

    def server(**settings) -> inference.InferenceServer:
        pools.append(PredictorPool(ServeSettings(**settings)))
        return inference.InferenceServer(pools[-1], timeout_s=120)

    try:
        yield server
    finally:
        for pool in pools:
            pool.close()
