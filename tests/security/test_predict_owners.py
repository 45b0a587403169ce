"""Predict jobs on a running studio with sign-in: ann predicts a file with her adapter; bob
cannot borrow the adapter, see, cancel or download her predict job, fetch her result file, or
queue a prediction of a file he did not upload; the host's row limit holds; root (an admin)
may download it. One studio with one worker; ann's adapter is imported (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import PASSWORDS, job_done, raw_call, refused, running_studio, ui_event
from gradio_client import Client, handle_file
from waiting import wait_for

PRIVATE = "ANNS-PRIVATE-ROW"


def _rows(path: Path, n: int, secret: str = "") -> str:
    lines = ["id,text"] + [
        f"{i},the film was {'fine' if i % 2 else 'dull'} {secret}" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict-owners")
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, IA3_MAX_ROWS="20") as attacked:
        clients = {name: attacked.client(name) for name in PASSWORDS}
        ann = clients["ann"]
        adapter = ann.predict(
            handle_file(str(archive)), "minilm", "ann's", api_name="/import_adapter"
        )
        job = ann.predict(
            handle_file(_rows(tmp / "ann-rows.csv", 6, PRIVATE)),
            adapter,
            "",
            "",
            api_name="/predict_file",
        )
        status = wait_for(lambda: job_done(ann, job), 240, "ann's prediction", poll_s=1)
        raw = Client(
            attacked.url, auth=("ann", PASSWORDS["ann"]), verbose=False, download_files=False
        )
        handed = raw.predict(job, api_name="/download_prediction")
        yield {
            **clients,
            "studio": attacked,
            "tmp": tmp,
            "adapter": adapter,
            "job": job,
            "status": status,
            "handed": handed["path"],
            "bob_http": attacked.http("bob"),
            "ann_http": attacked.http("ann"),
        }


def test_ann_gets_her_rows_back_with_predictions(studio, tmp_path):
    assert studio["status"]["message"].startswith("Predicted 6 rows")
    path = studio["ann"].predict(studio["job"], api_name="/download_prediction")
    text = Path(path).read_text()
    assert PRIVATE in text and text.splitlines()[0] == "id,text,predicted_label,prob_neg,prob_pos"


def test_bob_cannot_see_cancel_or_download_anns_predict_job(studio):
    bob, job = studio["bob"], studio["job"]
    for api_name in (
        "/job_status",
        "/job_log",
        "/cancel_job",
        "/retry_job",
        "/download_prediction",
    ):
        assert f"No job #{job} among yours" in refused(bob, job, api_name=api_name)
    assert bob.predict(api_name="/list_jobs") == []
    assert Path(studio["root"].predict(job, api_name="/download_prediction")).is_file()


def test_bob_cannot_fetch_the_file_handed_to_ann(studio):
    url = f"/gradio_api/file={studio['handed']}"
    assert studio["bob_http"].get(url).status_code == 404
    answer = studio["ann_http"].get(url)
    assert answer.status_code == 200 and PRIVATE.encode() in answer.content


def test_bob_cannot_predict_with_anns_adapter(studio, tmp_path):
    adapter = studio["adapter"]
    mine = handle_file(_rows(tmp_path / "bob.csv", 3))
    message = refused(studio["bob"], mine, adapter, "", "", api_name="/predict_file")
    assert f"No adapter #{adapter} among yours" in message
    assert studio["bob"].predict(api_name="/list_jobs") == []


def test_bob_cannot_predict_a_file_he_did_not_upload(studio):
    data = studio["studio"].data
    stolen = [studio["handed"], *map(str, data.rglob("ann-rows*.csv")), "/etc/passwd"]
    for path in stolen:
        for given in (path, {"path": path}, _file_data(path)):
            event, answer = raw_call(studio["bob_http"], "/predict_file", given, None, "minilm", "")
            assert event == "error", answer
            assert PRIVATE not in str(answer) and str(data) not in str(answer)
    assert stolen[1:-1], "the stored copy of ann's file is among the paths tried"
    for path in stolen:
        inputs = [str(studio["adapter"]), "", _file_data(path), ""]
        answer = json.dumps(ui_event(studio["bob_http"], "predict-button", "click", inputs))
        assert "queued" not in answer and PRIVATE not in answer
    assert studio["bob"].predict(api_name="/list_jobs") == []


def test_a_file_over_the_row_limit_is_refused_before_queueing(studio, tmp_path):
    big = handle_file(_rows(tmp_path / "big.csv", 25))
    message = refused(studio["ann"], big, studio["adapter"], "", "", api_name="/predict_file")
    assert "cap of 20 rows" in message
    assert {j["id"] for j in studio["ann"].predict(api_name="/list_jobs")} == {studio["job"]}
