"""What people see names no server path, database URL or stack frame: the dataset preview, job
rows, model cards, share pages, the files of a download and every error message.

One studio with a worker: ann trains a 5-step MiniLM adapter on an uploaded CSV; the module
then looks for the server's folders (the data directory, the temporary folder) in all she sees.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import httpx
import pytest
from attack_support import job_done, refused, running_studio
from gradio_client import handle_file
from waiting import wait_for

from app import access_mode, auth
from app.messages import explain
from ia3engine.errors import AdapterError, DataError


def _reviews(path: Path) -> Path:
    words = ["great", "fine", "lovely", "best", "awful", "poor", "bad", "worst"]
    rows = [f"the film was {words[i % 8]},{'pos' if i % 8 < 4 else 'neg'}" for i in range(40)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seen-studio")
    with running_studio(tmp, workers=1) as attacked:
        ann = attacked.client("ann")
        spec = {"model": "minilm", "steps": 5, "eval_every": 0, "name": "ann-reviews"}
        upload = handle_file(str(_reviews(tmp / "reviews.csv")))
        job = ann.predict(spec, upload, None, api_name="/enqueue")
        status = wait_for(lambda: job_done(ann, job), 300, "the 5-step job to train", poll_s=1)
        yield {"studio": attacked, "ann": ann, "job": job, "adapter": status["adapter_id"]}


def _server_folders(studio) -> list[str]:
    """Folders whose names must never reach a person: the data directory and the test's tmp."""
    data = studio["studio"].data
    return [str(data), str(data.resolve()), str(studio["studio"].tmp), "/tmp/"]


def _shows_no_server_path(text: str, studio) -> None:
    for folder in _server_folders(studio):
        assert folder not in text, f"{folder!r} shown in: {text[:400]}"


def test_job_rows_name_the_dataset_by_its_file_name(studio):
    ann = studio["ann"]
    status = ann.predict(studio["job"], api_name="/job_status")
    assert status["spec"]["data"] == "reviews.csv"
    _shows_no_server_path(json.dumps(status), studio)
    _shows_no_server_path(json.dumps(ann.predict("", 50, api_name="/list_jobs")), studio)
    _shows_no_server_path(json.dumps(ann.predict(studio["job"], 200, api_name="/job_log")), studio)


def test_the_model_card_names_the_dataset_by_its_file_name(studio):
    info = studio["ann"].predict(studio["adapter"], api_name="/adapter_info")
    assert "`reviews.csv`" in info["card"]
    _shows_no_server_path(json.dumps(info), studio)


def test_the_share_page_names_no_server_path(studio):
    ann, adapter = studio["ann"], studio["adapter"]
    link = ann.predict(adapter, api_name="/share_adapter")
    page = httpx.get(studio["studio"].url + link, timeout=30)
    assert page.status_code == 200 and "reviews.csv" in page.text
    _shows_no_server_path(page.text, studio)
    ann.predict(adapter, api_name="/unshare_adapter")


def test_the_downloaded_adapter_files_name_no_server_path(studio):
    path = studio["ann"].predict(studio["adapter"], api_name="/download_adapter")
    with zipfile.ZipFile(path) as archive:
        texts = {
            name: archive.read(name)
            for name in archive.namelist()
            if name != "adapter_model.safetensors"
        }
    info = json.loads(texts["training_info.json"])
    assert info["spec"]["data"] == "reviews.csv"
    for data in texts.values():
        _shows_no_server_path(data.decode("utf-8", "replace"), studio)


def test_the_dataset_preview_names_the_file_not_where_it_sits(studio, tmp_path):
    info = studio["ann"].predict(
        handle_file(str(_reviews(tmp_path / "mine.csv"))),
        "",
        "",
        "classify",
        api_name="/describe_dataset",
    )
    assert info["file"] == "mine.csv"
    _shows_no_server_path(json.dumps(info), studio)


def test_a_broken_upload_is_explained_without_a_server_path(studio, tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"text,label\n" + b'"never closed,' * 3 + b"\x00\x01\x02" * 50)
    message = refused(
        studio["ann"], handle_file(str(broken)), "", "", "classify", api_name="/describe_dataset"
    )
    assert "broken.csv" in message
    _shows_no_server_path(message, studio)


@pytest.mark.parametrize(
    ("error", "hidden"),
    [
        (OSError("[Errno 13] Permission denied: '/srv/ia3/data/ia3.db'"), "/srv/ia3"),
        (
            RuntimeError("could not connect to postgresql+psycopg://ia3:s3cret@db:5432/ia3"),
            "s3cret",
        ),
        (
            ValueError('File "/usr/lib/python3.11/json/decoder.py", line 355, in raw_decode'),
            "/usr/lib",
        ),
        (FileNotFoundError(2, "No such file", "C:\\Users\\ann\\ia3\\data.csv"), "Users"),
    ],
)
def test_unexpected_errors_show_no_path_url_or_frame(error, hidden, monkeypatch):
    monkeypatch.setattr(access_mode, "_settings", auth.AccessSettings(mode="password"))
    shown = explain(error)
    assert hidden not in shown and "studio log" in shown
    kept = "Open /adapters/3, or https://huggingface.co/gpt2 for the base model."
    assert explain(AdapterError(kept)) == kept  # the studio's own pages and Hub links stay


def test_the_local_user_sees_their_own_paths_but_never_a_database_password():
    assert auth.active().mode == "local"  # one person on 127.0.0.1: the server is theirs
    assert "/home/ann/reviews.csv" in explain(DataError("No file /home/ann/reviews.csv here."))
    shown = explain(RuntimeError("could not connect to postgresql://ia3:s3cret@db/ia3"))
    assert "s3cret" not in shown


def test_spec_paths_in_a_refusal_are_named_by_file_name(studio):
    bob = studio["studio"].client("bob")
    data = studio["studio"].data
    spec = {"model": "minilm", "steps": 1, "data": str(data / "ia3.db")}
    message = refused(bob, spec, None, None, api_name="/enqueue")
    _shows_no_server_path(message, studio)
