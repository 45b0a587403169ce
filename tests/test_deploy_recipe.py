"""The README's install, server, worker and Space steps, run as written in a fresh virtual
environment: the Dockerfile's recipe, checked without a Docker engine (none runs here).

The build context is copied as `docker build` would send it (minus .dockerignore), the
"Install by hand" block runs line by line, then the image's command starts the studio the
way each README section does. Slow (a few minutes): it installs torch and every dependency.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from studio_support import free_port, wait_until_up

from app import access_users

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def readme_block(heading: str) -> list[str]:
    """The commands of the first bash block under `heading`: continuations joined, comments cut."""
    section = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    commands = [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines]
    return [" ".join(c.split()) for c in commands if c and not c.startswith("#")]


def build_context(target: Path) -> Path:
    """The files `docker build .` would send: the work tree minus .dockerignore's patterns."""
    patterns = [
        p.strip().removeprefix("**/")
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def ignored(folder, names):
        rel = Path(folder).relative_to(ROOT)
        return {
            n
            for n in names
            if any(
                fnmatch.fnmatch(str(rel / n).removeprefix("./"), p) or fnmatch.fnmatch(n, p)
                for p in patterns
            )
        }

    shutil.copytree(ROOT, target, ignore=ignored, symlinks=True)
    return target


def _clean_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IA3_", "SPACE_", "OAUTH", "SYSTEM", "VIRTUAL_ENV"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The build context with the README's "Install by hand" steps run in it."""
    context = build_context(tmp_path_factory.mktemp("image") / "app")
    steps = readme_block("## Install by hand")
    assert steps[:4] == [
        "python3 -m venv .venv",
        ". .venv/bin/activate",
        'pip install "torch==2.13.0"',
        'pip install -e ".[demo]"',
    ]
    assert steps[-1] == "ia3 studio"  # runs until stopped: the tests below start it themselves
    script = "set -euo pipefail\n" + "\n".join(steps[:-1]) + "\nia3 studio --help\n"
    started = time.monotonic()
    # PIP_NO_COMPILE: skip writing .pyc for torch's thousands of files (Python does it lazily).
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=context,
        env=_clean_env(PIP_NO_COMPILE="1"),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"\nREADME install steps in a fresh venv: {time.monotonic() - started:.0f} s")
    assert "train" in result.stdout and "--host" in result.stdout
    yield context
    shutil.rmtree(context / ".venv", ignore_errors=True)  # 2 GB; pytest keeps old tmp dirs


def run_readme_line(context: Path, line: str, env: dict, **kwargs):
    """Run one README command (its VAR=value prefix becomes the environment) in the venv."""
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_0-9]+=", words[0]):
        name, value = words.pop(0).split("=", 1)
        env = {**env, name: value}
    env = {**env, "PATH": f"{context / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"}
    return subprocess.Popen(words, cwd=context, env=env, start_new_session=True, **kwargs)


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _server_line(line: str, tmp: Path, port: int) -> str:
    """A README server command with this test's folders, a free port and the CPU."""
    line = line.replace("/srv/ia3", str(tmp / "srv")).replace("--device cuda:0", "--device cpu")
    return line.replace("--port 7860", f"--port {port}")


def test_the_image_command_refuses_to_listen_without_an_access_mode(installed, tmp_path):
    cmd = re.search(r"^CMD \[(.*)\]$", DOCKERFILE, re.M).group(1)
    words = [w.strip().strip('"') for w in cmd.split(",")]
    assert words == ["ia3", "studio", "--host", "0.0.0.0", "--port", "7860"]
    env = _clean_env(IA3_DATA_DIR=str(tmp_path / "data"))
    process = run_readme_line(
        installed,
        " ".join(words[:-1] + [str(free_port())]),
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "will not listen on 0.0.0.0" in err and "hf_oauth: true" in err


def test_gpu_server_section_password_sign_in(installed, tmp_path):
    lines = readme_block("### On a GPU server")
    add = next(line for line in lines if line.startswith("ia3 users add"))
    studio = next(line for line in lines if "ia3 studio --host 0.0.0.0" in line)
    users = run_readme_line(
        installed, _server_line(add, tmp_path, 0), _clean_env(), stdin=subprocess.PIPE, text=True
    )
    users.communicate("ann-password\nann-password\n", timeout=120)  # no tty: getpass reads stdin
    assert users.returncode == 0
    port = free_port()
    log = tmp_path / "studio.log"
    with open(log, "w") as out:
        process = run_readme_line(
            installed,
            _server_line(studio, tmp_path, port),
            _clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url + "/", process, log, timeout_s=120)
            assert httpx.get(url + "/config", timeout=30).status_code == 401  # sign-in first
            http = httpx.Client(base_url=url, timeout=30)
            assert (
                http.post("/login", data={"username": "ann", "password": "nope"}).status_code == 400
            )
            assert (
                http.post(
                    "/login", data={"username": "ann", "password": "ann-password"}
                ).status_code
                == 200
            )
            assert http.get("/config").status_code == 200
            assert (tmp_path / "srv" / "ia3.db").is_file()  # IA3_DATA_DIR as the README sets it
        finally:
            stop(process)


def test_workers_section_a_worker_needs_only_the_database_url(installed, tmp_path):
    lines = readme_block("### Several worker machines on one PostgreSQL")
    studio = next(line for line in lines if "ia3 studio" in line)
    worker = next(line for line in lines if "ia3 worker" in line)
    url_db = os.environ.get("IA3_TEST_POSTGRES_URL") or f"sqlite:///{tmp_path / 'shared.db'}"
    readme_db = re.search(r"IA3_DATABASE_URL=(\S+)", studio).group(1)
    (tmp_path / "srv").mkdir()

    access_users.add_user(tmp_path / "srv" / "users.txt", "ann", "ann-password")
    port = free_port()
    studio_line = _server_line(studio.replace(readme_db, url_db), tmp_path, port)
    log = tmp_path / "studio.log"
    with open(log, "w") as out:
        env = _clean_env(IA3_DATA_DIR=str(tmp_path / "studio-data"))
        process = run_readme_line(
            installed, studio_line + f" --port {port}", env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/", process, log, timeout_s=120)
            ann = Client(f"http://127.0.0.1:{port}", auth=("ann", "ann-password"), verbose=False)
            job = ann.predict(
                {"model": "minilm", "data": "sentiment", "steps": 5, "eval_every": 0},
                None,
                None,
                api_name="/enqueue",
            )
            # Another "machine": its own data folder, nothing but the URL in common.
            worker_env = _clean_env(IA3_DATA_DIR=str(tmp_path / "worker-data"))
            line = _server_line(worker.replace(readme_db, url_db), tmp_path, port) + " --once"
            ran = run_readme_line(
                installed,
                line,
                worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            output, _ = ran.communicate(timeout=600)
            assert ran.returncode == 0, output[-3000:]
            status = ann.predict(job, api_name="/job_status")
            assert status["status"] == "done" and status["owner"] == "ann", status
        finally:
            stop(process)


def test_space_section_signs_people_in_with_hugging_face(installed, tmp_path):
    front = README.split("---", 2)[1]
    for key in (
        "sdk: docker",
        "app_port: 7860",
        "hf_oauth: true",
        "suggested_hardware:",
        "suggested_storage:",
        "title:",
        "emoji:",
    ):
        assert key in front
    for line in (
        "IA3_DATA_DIR=/data",
        "HF_HOME=/data/huggingface",
        "USER user",
        "useradd --create-home --uid 1000 user",
        "EXPOSE 7860",
    ):
        assert line in DOCKERFILE
    run_lines = [" ".join(m.split()) for m in re.findall(r"&& (pip install [^\n\\]+)", DOCKERFILE)]
    assert run_lines == [
        'pip install --index-url "$TORCH_INDEX" "torch==2.13.0"',
        'pip install -e ".[demo]"',
    ]  # the README's two install lines (with a choosable index for torch)
    # What a Space with hf_oauth: true provides, and the image's command on a free port.
    space = {
        "SYSTEM": "spaces",
        "SPACE_ID": "team/ia3",
        "OAUTH_CLIENT_ID": "id",
        "OAUTH_CLIENT_SECRET": "secret",
        "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
        "IA3_ADMINS": "ann",
        "IA3_DATA_DIR": str(tmp_path / "data"),
    }
    port = free_port()
    log = tmp_path / "space.log"
    with open(log, "w") as out:
        process = run_readme_line(
            installed,
            f"ia3 studio --host 0.0.0.0 --port {port}",
            _clean_env(**space),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url + "/", process, log, timeout_s=120)
            config = httpx.get(url + "/config", timeout=30).json()
            login = [c for c in config["components"] if c["props"].get("elem_id") == "login"]
            assert login and "Hugging Face" in str(login[0]["props"].get("value"))
        finally:
            stop(process)
