"""Every file argument takes only a file this person uploaded (or a sample by name): bob names
files on the server, ann's uploads and ann's downloads, as text, as a dict and as FileData.

One studio without a worker serves the module; ann imports an adapter (no training needed) and
uploads a dataset, bob is the attacker who has somehow learnt where her files sit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import PASSWORDS, raw_call, running_studio, ui_event
from gradio_client import Client, handle_file

SECRET = "TOPSECRET-ROW"
NOT_YOURS = "not uploaded by you"


def _file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


def _reviews(path: Path, secret: str = "") -> Path:
    rows = [
        f"{'a fine film' if i % 2 else 'a dull film'} {secret},{'pos' if i % 2 else 'neg'}"
        for i in range(12)
    ]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def _refused(studio, name: str, given, *args, api_name: str) -> str:
    """The message refusing `given` (as text, a dict or FileData, sent as is) to `name`."""
    event, data = raw_call(studio[f"{name}_http"], api_name, given, *args)
    assert event == "error", f"{api_name} accepted {given!r}: {data!r}"
    return str(data)


def _raw_client(studio, name: str) -> Client:
    """gradio_client that hands back the server's FileData instead of downloading it."""
    return Client(studio.url, auth=(name, PASSWORDS[name]), verbose=False, download_files=False)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files-studio")
    secret = _reviews(tmp / "server-secret.csv", SECRET)  # a file on the host, not uploaded
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, workers=0) as attacked:
        ann, bob = attacked.client("ann"), attacked.client("bob")
        adapter = ann.predict(
            handle_file(str(archive)), "minilm", "ann's", api_name="/import_adapter"
        )
        ann_http = attacked.http("ann")
        upload = _reviews(tmp / "ann-reviews.csv", "ANNS-PRIVATE-ROW")
        with open(upload, "rb") as handle:
            answer = ann_http.post("/gradio_api/upload", files={"files": handle})
        assert answer.status_code == 200, answer.text
        ann_upload = answer.json()[0]
        download = _raw_client(attacked, "ann").predict(adapter, api_name="/download_adapter")
        yield {
            "studio": attacked,
            "ann": ann,
            "bob": bob,
            "secret": str(secret),
            "adapter": adapter,
            "ann_upload": ann_upload,
            "ann_download": download["path"],
            "ann_http": ann_http,
            "bob_http": attacked.http("bob"),
        }


@pytest.mark.parametrize("form", ["text", "dict", "filedata"])
def test_the_dataset_preview_reads_no_file_from_the_server(studio, form):
    path = studio["secret"]
    given = {"text": path, "dict": {"path": path}, "filedata": _file_data(path)}[form]
    message = _refused(studio, "bob", given, "", "", "classify", api_name="/describe_dataset")
    assert SECRET not in message and path not in message


@pytest.mark.parametrize("form", ["text", "dict", "filedata"])
def test_the_preview_does_not_read_another_persons_upload(studio, form):
    path = studio["ann_upload"]
    given = {"text": path, "dict": {"path": path}, "filedata": _file_data(path)}[form]
    message = _refused(studio, "bob", given, "", "", "classify", api_name="/describe_dataset")
    assert NOT_YOURS in message and "ANNS-PRIVATE-ROW" not in message
    event, mine = raw_call(
        studio["ann_http"], "/describe_dataset", _file_data(path), "", "", "classify"
    )
    assert event == "complete" and mine[0]["n_rows"] == 12  # the uploader herself is served


@pytest.mark.parametrize("route", ["/gradio_api/file=", "/gradio_api/file/"])
def test_an_upload_is_fetched_by_its_uploader_only(studio, route):
    url = route + studio["ann_upload"]
    assert studio["bob_http"].get(url).status_code == 404
    assert studio["bob_http"].head(url).status_code == 404
    assert b"ANNS-PRIVATE-ROW" not in studio["bob_http"].get(url).content
    assert b"ANNS-PRIVATE-ROW" in studio["ann_http"].get(url).content


def test_a_download_handed_to_one_person_is_fetched_by_them_only(studio):
    url = f"/gradio_api/file={studio['ann_download']}"
    assert studio["bob_http"].get(url).status_code == 404
    answer = studio["ann_http"].get(url)
    assert answer.status_code == 200 and answer.content.startswith(b"PK")


def test_a_job_cannot_be_queued_on_a_server_file_or_another_persons_upload(studio):
    spec = {"model": "minilm", "steps": 1, "name": "bob-steals"}
    for path in (studio["secret"], studio["ann_upload"]):
        for given in (path, {"path": path}, _file_data(path)):
            event, data = raw_call(studio["bob_http"], "/enqueue", spec, given, None)
            assert event == "error", data
            event, data = raw_call(studio["bob_http"], "/enqueue", spec, None, given)
            assert event == "error", data
    assert studio["bob"].predict(api_name="/list_jobs") == []


def test_another_persons_adapter_zip_cannot_be_imported_by_its_path(studio):
    data = studio["studio"].data
    stolen = [studio["ann_download"], *map(str, (data / "downloads").rglob("*.zip"))]
    for path in stolen:
        for given in (path, {"path": path}, _file_data(path)):
            message = _refused(studio, "bob", given, "minilm", "mine", api_name="/import_adapter")
            assert NOT_YOURS in message
    assert studio["bob"].predict("", "", "", api_name="/list_adapters") == []


def test_a_server_folder_cannot_be_imported_and_the_answer_names_nothing(studio):
    folder = str(studio["studio"].data)
    message = _refused(studio, "bob", folder, "minilm", "", api_name="/import_adapter")
    assert NOT_YOURS in message and folder not in message


def test_own_uploads_and_samples_by_name_still_work(studio, tmp_path):
    ann = studio["ann"]
    own = ann.predict(
        handle_file(str(_reviews(tmp_path / "mine.csv"))),
        "",
        "",
        "classify",
        api_name="/describe_dataset",
    )
    assert own["file"] == "mine.csv" and own["n_rows"] == 12
    sample = ann.predict("sentiment", "", "", "classify", api_name="/describe_dataset")
    assert sample["n_rows"] > 0 and sample["file"] == "sentiment_train.csv"
    assert ann.predict(api_name="/samples")["sentiment"] == "sentiment_train.csv"  # no server path


def test_a_visitor_who_has_not_signed_in_cannot_upload(studio, tmp_path):
    with open(_reviews(tmp_path / "anonymous.csv"), "rb") as handle:
        answer = studio["studio"].http().post("/gradio_api/upload", files={"files": handle})
    assert answer.status_code in (401, 403)


def test_the_train_tabs_upload_box_previews_no_one_elses_file(studio):
    """The page's own event, fired as the browser would, with ann's upload in the file box."""
    upload = _file_data(studio["ann_upload"])
    inputs = ["Upload a file", "sentiment", upload, None, None, "classify"]
    answer = json.dumps(ui_event(studio["bob_http"], "data-upload", "change", inputs))
    assert "ANNS-PRIVATE-ROW" not in answer and NOT_YOURS in answer
    mine = json.dumps(ui_event(studio["ann_http"], "data-upload", "change", inputs))
    assert "ANNS-PRIVATE-ROW" in mine  # her own upload previews for her


def test_the_adapters_tabs_import_button_takes_no_one_elses_zip(studio):
    stolen = _file_data(studio["ann_download"])
    answer = json.dumps(
        ui_event(studio["bob_http"], "import-button", "click", [stolen, "minilm", "bob's"])
    )
    assert NOT_YOURS in answer
    assert studio["bob"].predict("", "", "", api_name="/list_adapters") == []
