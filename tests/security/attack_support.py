"""A real studio with password sign-in to attack: started per test module, driven over raw HTTP
and gradio_client as its users (ann, bob), an admin (root) and an anonymous visitor.

Every module under tests/security/ starts its own `ia3 studio` process (with IA3_USERS, its own
data directory, and the settings the module passes), so an attack that crashes or fills one
studio cannot make another module's tests pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from studio_support import free_port, wait_until_up

from app import access_users

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"ann": "ann-password", "bob": "bob-password", "root": "root-password"}


@dataclass
class AttackedStudio:
    """A running studio: base URL (no trailing slash), data dir, password file, process, log."""

    url: str
    data: Path
    users: Path
    process: subprocess.Popen
    log: Path
    tmp: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, name: str) -> Client:
        """gradio_client signed in as `name`."""
        return Client(self.url, auth=(name, PASSWORDS[name]), verbose=False)

    def http(self, name: str | None = None, **kwargs) -> httpx.Client:
        """A raw HTTP client; signed in through /login when `name` is given."""
        return (
            signed_in(self.url, name, **kwargs)
            if name
            else httpx.Client(base_url=self.url, timeout=30, **kwargs)
        )


def studio_env(users: Path, data: Path, **env: str) -> dict[str, str]:
    """The environment of a studio under test: no IA3_/Space/OAuth variable leaks in from
    the caller's shell, offline, password sign-in, root as admin, a 1 MB upload cap."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IA3_", "SPACE_", "OAUTH"))}
    clean.pop("SYSTEM", None)
    clean.update(
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        IA3_USERS=str(users),
        IA3_ADMINS="root",
        IA3_MAX_UPLOAD_MB="1",
        IA3_DATA_DIR=str(data),
    )
    clean.update(env)
    return clean


@contextlib.contextmanager
def running_studio(
    tmp: Path, *, workers: int = 1, host: str = "127.0.0.1", **env: str
) -> Iterator[AttackedStudio]:
    """`ia3 studio` with password sign-in on a free port; `env` adds or overrides variables."""
    users = tmp / "users.txt"
    if not users.exists():
        for name, password in PASSWORDS.items():
            access_users.add_user(users, name, password)
    port, data, log_path = free_port(), tmp / "data", tmp / "studio.log"
    command = [sys.executable, "-m", "app.studio_cli", "--host", host, "--port", str(port)]
    command += ["--workers", str(workers)] if workers else ["--no-worker"]
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=studio_env(users, data, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/", process, log_path, timeout_s=180)
        yield AttackedStudio(url, data, users, process, log_path, tmp)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the studio and the workers it started
            process.wait(timeout=10)
        log.close()


def signed_in(url: str, name: str, **kwargs) -> httpx.Client:
    """An HTTP client holding `name`'s session cookie from the sign-in form."""
    http = httpx.Client(base_url=url, timeout=30, **kwargs)
    response = http.post("/login", data={"username": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    return http


def refused(client: Client, *args, api_name: str) -> str:
    """The message of the error `client` gets calling `api_name`; fails if the call succeeds."""

    with pytest.raises(AppError) as error:
        client.predict(*args, api_name=api_name)
    return str(error.value)


def job_done(client: Client, job: int) -> dict | None:
    """The job's status once it is done, None while it is queued or running; fails at once if
    it ended any other way (for wait_for)."""
    status = client.predict(job, api_name="/job_status")
    assert status["status"] in ("queued", "running", "done"), status
    return status if status["status"] == "done" else None


def raw_call(http: httpx.Client, api_name: str, *args) -> tuple[str, object]:
    """Call a named endpoint over Gradio's plain REST route, arguments sent exactly as given
    (gradio_client would upload a FileData dict's file from this machine first).

    Returns ("complete", output list) or ("error", the message shown)."""
    answer = http.post(f"/gradio_api/call/{api_name.strip('/')}", json={"data": list(args)})
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event_id"]
    last = ("error", None)
    with http.stream("GET", f"/gradio_api/call/{api_name.strip('/')}/{event_id}") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ").strip()
            elif line.startswith("data: ") and event in ("complete", "error"):
                data = json.loads(line.removeprefix("data: "))
                if event == "error" and isinstance(data, dict):
                    data = data.get("error") or json.dumps(data)
                last = (event, data)
                break
    return last


def ui_event(http: httpx.Client, elem_id: str, trigger: str, data: list) -> dict:
    """Fire one event of the page (the component with `elem_id`, e.g. "change" or "click") the
    way the browser does, over Gradio's queue; returns the process_completed message."""
    config = http.get("/config").json()
    component = next(
        c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id
    )
    fn_index = next(d["id"] for d in config["dependencies"] if [component, trigger] in d["targets"])
    session = secrets.token_hex(8)
    body = {
        "data": data,
        "fn_index": fn_index,
        "session_hash": session,
        "event_data": None,
        "trigger_id": component,
    }
    answer = http.post("/gradio_api/queue/join", json=body)
    assert answer.status_code == 200, answer.text
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no answer to the {trigger} event of #{elem_id}")


def review_csv(path: Path, labels: tuple[str, str], mark: str = "") -> str:
    """40 short film reviews in a CSV, every field quoted: the good ones labelled labels[0],
    the bad ones labels[1]; `mark` ends every text (a string the owner's data can be found by)."""
    lines = ["text,label"]
    for i in range(40):
        good = i % 2 == 0
        word = ("great fine lovely best" if good else "awful poor bad worst").split()[i % 4]
        lines.append(f'"the film was {word}{mark}","{labels[0] if good else labels[1]}"')
    path.write_text("\n".join(lines) + "\n")
    return str(path)
