"""scripts/test-services.sh, which `make test` runs pytest inside: a throwaway PostgreSQL
that the command can use, gone afterwards, also after a failure or Ctrl-C."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-services.sh"
HAS_SERVER = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
HAS_CHROMIUM = bool(shutil.which("chromium") or shutil.which("chromium-browser"))
needs_services = pytest.mark.skipif(
    not (HAS_SERVER and HAS_CHROMIUM), reason="PostgreSQL's server or chromium is not installed"
)
# What the command sees: its URL and whether the server answers as the role `app`.
REPORT = (
    "import os, sqlalchemy as sa; url = os.environ['IA3_TEST_POSTGRES_URL']; print(url);"
    "e = sa.create_engine(url); c = e.connect();"
    "print(c.execute(sa.text('SELECT current_user')).scalar(), flush=True);"
    "c.close(); e.dispose()"
)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IA3_TEST_")}
    return {**env, **extra}


def _folder(stderr: str) -> Path:
    """The server's folder, from the line the script prints when it is up."""
    return Path(re.search(r"\(in (\S+), removed afterwards\)", stderr).group(1))


def _answers(url: str) -> bool:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@needs_services
def test_the_command_gets_a_server_that_is_gone_afterwards():
    run = subprocess.run(
        ["bash", str(SCRIPT), sys.executable, "-c", REPORT + "; raise SystemExit(3)"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr  # the command's own exit code
    url, user = run.stdout.splitlines()
    assert url.startswith("postgresql+psycopg://app:app@127.0.0.1:") and user == "app"
    folder = _folder(run.stderr)
    assert folder.name.startswith("ia3-test-pg.")
    assert not folder.exists()
    assert not _answers(url)


@needs_services
def test_ctrl_c_stops_and_removes_the_server():
    # Ctrl-C in a terminal signals the whole foreground process group.
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), sys.executable, "-c", REPORT + "; import time; time.sleep(60)"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    folder = _folder(proc.stderr.readline())
    url = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "app"
    assert folder.is_dir() and _answers(url)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()
    assert not _answers(url)


@needs_services
def test_a_url_already_set_is_used_and_no_server_is_started():
    given = "postgresql+psycopg://someone:secret@db.example:5432/theirs"
    run = subprocess.run(
        ["bash", str(SCRIPT), "sh", "-c", 'echo "$IA3_TEST_POSTGRES_URL"'],
        env=_env(IA3_TEST_POSTGRES_URL=given),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == given
    assert "PostgreSQL" not in run.stderr


def test_opting_out_runs_the_command_alone():
    run = subprocess.run(
        ["bash", str(SCRIPT), "sh", "-c", 'echo "url=$IA3_TEST_POSTGRES_URL"; exit 4'],
        env=_env(IA3_TEST_SERVICES="none"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 4 and run.stdout.strip() == "url=" and run.stderr == ""
