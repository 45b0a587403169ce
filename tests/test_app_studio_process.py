"""`ia3 studio` owns its embedded workers: they end with it, even when it is killed; and it
refuses to start with a job time limit it cannot read; a stop ends the open pages' streams;
two studios on one machine keep their files apart."""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from studio_support import ROOT, free_port, running_studio, wait_gone

from app import studio_cli


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


def test_a_stop_ends_open_pages_streams_cleanly(tmp_path):
    """An open page holds Gradio's heartbeat stream; a stop ends it (the page hears the end)
    instead of waiting out the graceful timeout and cancelling it mid-stream."""
    with running_studio(tmp_path, workers=0) as studio:
        url = f"{studio.url}gradio_api/heartbeat/page-one"
        with httpx.stream("GET", url, timeout=30) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_text()
            assert "ALIVE" in next(chunks)
            studio.process.send_signal(signal.SIGTERM)
            rest = "".join(chunks)  # raises RemoteProtocolError if the stream is cut instead
        assert studio.process.wait(timeout=60) == 0
    assert rest == ""
    log = studio.log.read_text()
    assert "Traceback" not in log and "graceful shutdown exceeded" not in log, log[-3000:]


def _upload(studio, path: Path) -> Path:
    with open(path, "rb") as handle:
        answer = httpx.post(f"{studio.url}gradio_api/upload", files={"files": handle}, timeout=60)
    assert answer.status_code == 200, answer.text
    return Path(answer.json()[0])


def test_two_studios_on_one_machine_keep_their_files_apart(tmp_path, monkeypatch):
    """Gradio names an upload's path by its bytes, in one folder per machine unless told
    otherwise, and an app that stops deletes every file it was sent: each studio has a folder
    of its own, so the one that stops leaves the other's copy of the same file."""
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    upload = tmp_path / "reviews.csv"
    upload.write_text("text,label\na fine film,pos\na dull film,neg\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_studio(tmp_path / "a", workers=0) as first:
        with running_studio(tmp_path / "b", workers=0) as second:
            kept, dropped = _upload(first, upload), _upload(second, upload)
            assert kept.parent.parent != dropped.parent.parent
        assert kept.read_bytes() == upload.read_bytes()
        assert not dropped.parent.parent.exists()  # the stopped studio removed its folder
    assert not kept.parent.parent.exists()


def test_a_studio_removes_the_file_folder_a_killed_studio_left(tmp_path, monkeypatch):
    """A studio killed outright (the out-of-memory killer) cannot remove its file folder, with
    the uploads in it; the next studio that starts on the machine does."""
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    root = Path(tempfile.gettempdir())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_studio(tmp_path / "a", workers=0) as killed:
        left = list(root.glob(f"{studio_cli.FILES_PREFIX}{killed.process.pid}-*"))
        assert len(left) == 1
        _upload(killed, ROOT / "examples/data/sentiment_eval.csv")
        assert any(path.is_file() for path in left[0].rglob("*.csv"))
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.wait()
    # (Not checked here that the folder outlived the kill: a studio another test process
    # starts meanwhile may already have removed it.)
    with running_studio(tmp_path / "b", workers=0) as started:
        assert not left[0].exists()
        assert list(root.glob(f"{studio_cli.FILES_PREFIX}{started.process.pid}-*"))
