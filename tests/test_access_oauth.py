"""The studio on a Space with Hugging Face sign-in (hf_oauth: true), without reaching the Hub.

The Space's OAuth variables are set by hand and sessions are signed the way gradio's session
middleware signs them after a real login, so each request carries a Hub user: ann's work is
hers, bob sees none of it, nobody signed in can queue nothing, a forged session is nobody.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from studio_support import SPACE, SPACE_SECRET, free_port, hub_session, wait_until_up

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("space")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IA3_", "SPACE_", "OAUTH", "SYSTEM"))
    }
    env.update(SPACE, HF_HUB_OFFLINE="1", IA3_ADMINS="root", IA3_DATA_DIR=str(tmp / "data"))
    log = open(tmp / "studio.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.studio_cli",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-worker",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/", process, tmp / "studio.log", timeout_s=120)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def client(url: str, name: str | None, secret: str = SPACE_SECRET) -> Client:
    headers = {"Cookie": f"session={hub_session(name, secret)}"} if name else {}
    return Client(url, headers=headers, verbose=False)


def test_the_page_offers_hugging_face_sign_in(space):
    config = httpx.get(space + "/config", timeout=30).json()
    buttons = [c["props"] for c in config["components"] if c["props"].get("elem_id") == "login"]
    assert buttons and "Hugging Face" in str(buttons[0].get("value"))
    # The login route is there; following it needs huggingface.co, which tests never reach.
    login = httpx.get(space + "/login/huggingface", timeout=30, follow_redirects=False)
    assert login.status_code != 404


def test_each_hub_user_sees_only_their_own_jobs(space):
    ann, bob, root = client(space, "ann"), client(space, "bob"), client(space, "root")
    job = ann.predict(
        {"model": "minilm", "data": "sentiment", "steps": 5}, None, None, api_name="/enqueue"
    )
    assert ann.predict(job, api_name="/job_status")["owner"] == "ann"
    assert job not in {j["id"] for j in bob.predict(api_name="/list_jobs")}

    with pytest.raises(AppError, match=f"No job #{job} among yours"):
        bob.predict(job, api_name="/cancel_job")
    assert ann.predict(job, api_name="/job_status")["status"] == "queued"
    assert job in {j["id"] for j in root.predict(api_name="/list_jobs")}


def test_nobody_signed_in_and_forged_sessions_get_nothing(space):
    client(space, "ann").predict(
        {"model": "minilm", "data": "sentiment", "steps": 5}, None, None, api_name="/enqueue"
    )
    for stranger in (client(space, None), client(space, "ann", secret="guessed-secret")):
        assert stranger.predict(api_name="/list_jobs") == []
        with pytest.raises(AppError, match="not signed in"):  # loading models costs memory
            stranger.predict("distilgpt2", "generate", api_name="/describe_model")
        with pytest.raises(AppError, match="not signed in"):
            stranger.predict(
                {"model": "minilm", "data": "sentiment", "steps": 5},
                None,
                None,
                api_name="/enqueue",
            )
