"""A running studio with password sign-in, attacked over HTTP and gradio_client: each test here
would let someone in, or lose someone's data, if it failed.

One studio (a real `ia3 studio` process with one worker) serves the module: ann trains an
adapter on a CSV full of spreadsheet formulas, bob tries everything against it, root (an admin)
sees both. No network: the bundled MiniLM and the shipped samples only.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import httpx
import pytest
from attack_support import (
    PASSWORDS,
    ROOT,
    job_done,
    refused,
    review_csv,
    running_studio,
    signed_in,
)
from gradio_client import handle_file
from waiting import wait_for

FORMULAS = ["=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "+1+2", "-2+3"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure-studio")
    with running_studio(tmp) as attacked:
        url, data = attacked.url, attacked.data
        clients = {name: attacked.client(name) for name in PASSWORDS}
        ann = clients["ann"]
        spec = {"model": "minilm", "steps": 5, "eval_every": 0, "name": "ann-formulas"}
        job = ann.predict(
            spec,
            handle_file(review_csv(tmp / "formulas.csv", (FORMULAS[0], FORMULAS[1]))),
            None,
            api_name="/enqueue",
        )
        status = wait_for(lambda: job_done(ann, job), 240, "the 5-step job to train", poll_s=1)
        yield {
            "url": url,
            "data": data,
            "tmp": tmp,
            "job": job,
            "adapter": status["adapter_id"],
            **clients,
        }


def test_bob_cannot_reach_anns_job_through_any_endpoint(studio):
    bob, job = studio["bob"], studio["job"]
    for api_name in ("/job_status", "/job_log", "/job_curves", "/cancel_job", "/retry_job"):
        message = refused(bob, job, api_name=api_name)
        assert f"No job #{job} among yours" in message
    assert bob.predict(api_name="/list_jobs") == []
    assert studio["ann"].predict(job, api_name="/job_status")["status"] == "done"
    assert job in {j["id"] for j in studio["root"].predict(api_name="/list_jobs")}


def test_bob_cannot_see_download_change_or_share_anns_adapter(studio):
    bob, adapter = studio["bob"], studio["adapter"]
    calls = {
        "/adapter_info": (adapter,),
        "/download_adapter": (adapter,),
        "/download_adapter_file": (adapter, "adapter_model.safetensors"),
        "/rename_adapter": (adapter, "bob's now"),
        "/delete_adapter": (adapter,),
        "/share_adapter": (adapter,),
        "/share_link": (adapter,),
        "/unshare_adapter": (adapter,),
        "/predict": ("a fine film", [adapter], True),
        "/mix": ("a film", [adapter, 99999], [0.5, 0.5]),
    }
    for api_name, args in calls.items():
        assert f"No adapter #{adapter} among yours" in refused(bob, *args, api_name=api_name)
    assert bob.predict("", "", "", api_name="/list_adapters") == []
    info = studio["ann"].predict(adapter, api_name="/adapter_info")
    assert info["name"] == "ann-formulas" and info["owner"] == "ann"
    assert adapter in {
        a["id"] for a in studio["root"].predict("", "", "", api_name="/list_adapters")
    }


def test_adapter_page_and_downloads_answer_404_without_the_share_token(studio):
    url, adapter = studio["url"], studio["adapter"]
    bob = signed_in(url, "bob")
    paths = [
        f"/adapters/{adapter}",
        f"/adapters/{adapter}/download.zip",
        f"/adapters/{adapter}/files/adapter_model.safetensors",
    ]
    missing = httpx.get(f"{url}/adapters/99999", timeout=30)
    assert missing.status_code == 404
    for path in paths:
        for response in (httpx.get(url + path, timeout=30), bob.get(path)):
            assert response.status_code == 404
            assert "ann-formulas" not in response.text
    # The same answer as for an adapter that does not exist: nothing tells them apart.
    assert httpx.get(url + paths[0], timeout=30).text == missing.text


def test_a_share_link_opens_the_page_and_download_and_guesses_do_not(studio):
    url, adapter, ann = studio["url"], studio["adapter"], studio["ann"]
    link = ann.predict(adapter, api_name="/share_adapter")
    token = link.split("token=")[1]
    page = httpx.get(url + link, timeout=30)
    assert page.status_code == 200 and "ann-formulas" in page.text
    assert f"download.zip?token={token}" in page.text
    download = httpx.get(f"{url}/adapters/{adapter}/download.zip?token={token}", timeout=30)
    assert download.status_code == 200 and download.content[:2] == b"PK"
    for guess in (token[:-1], token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * len(token)):
        assert httpx.get(f"{url}/adapters/{adapter}?token={guess}", timeout=30).status_code == 404
    assert httpx.get(f"{url}/adapters/{adapter + 1}?token={token}", timeout=30).status_code == 404
    ann.predict(adapter, api_name="/unshare_adapter")
    assert httpx.get(url + link, timeout=30).status_code == 404


def test_the_data_directory_is_never_served_as_files(studio):
    ann, data = signed_in(studio["url"], "ann"), studio["data"]
    secrets_on_disk = [data / "ia3.db", *data.glob("downloads/*"), *data.glob("uploads/*/*")]
    assert (data / "ia3.db").is_file()
    for path in secrets_on_disk:
        response = ann.get(f"/gradio_api/file={path}")
        assert response.status_code == 403, path
    assert httpx.get(studio["url"] + "/gradio_api/info", timeout=30).status_code == 401


def test_downloads_hold_no_csv_and_keep_formula_labels_as_inert_text(studio, tmp_path):
    """The studio exports no CSV at all (checked here on every download), so a label like
    =cmd|... can never reach a spreadsheet through it; JSON and the card keep it as text."""
    ann, adapter = studio["ann"], studio["adapter"]
    archive = Path(ann.predict(adapter, api_name="/download_adapter"))
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        info = json.loads(opened.read("training_info.json"))
        card = opened.read("README.md").decode()
    assert not [n for n in names if n.lower().endswith((".csv", ".tsv", ".xls", ".xlsx"))]
    assert set(info["labels"]) == set(FORMULAS[:2])
    page = httpx.get(studio["url"] + ann.predict(adapter, api_name="/share_adapter"), timeout=30)
    assert "<script" not in page.text.lower() and "javascript:" not in page.text.lower()
    assert card  # the card is Markdown, rendered with raw HTML switched off on the page


def test_uploads_over_the_size_limit_are_refused_and_the_studio_keeps_serving(studio, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "x" * 1_200_000 + ",a\n")  # over IA3_MAX_UPLOAD_MB=1
    ann = studio["ann"]
    with pytest.raises(Exception) as refused:
        ann.predict(handle_file(str(big)), "", "", "classify", api_name="/describe_dataset")
    assert "413" in str(refused.value) or "size" in str(refused.value).lower()
    assert ann.predict(studio["job"], api_name="/job_status")["status"] == "done"


def test_malformed_uploads_get_a_message_not_a_crash(studio, tmp_path):
    ann = studio["ann"]
    junk = tmp_path / "junk.csv"
    junk.write_bytes(bytes(range(256)) * 40)
    message = refused(ann, handle_file(str(junk)), "", "", "classify", api_name="/describe_dataset")
    assert "Traceback" not in message and len(message) > 20
    not_zip = tmp_path / "adapter.zip"
    not_zip.write_bytes(b"PK\x03\x04 this is not really a zip")
    message = refused(ann, handle_file(str(not_zip)), "minilm", "", api_name="/import_adapter")
    assert "Traceback" not in message
    assert ann.predict(studio["job"], api_name="/job_status")["status"] == "done"


def _adapter_files(studio) -> dict[str, bytes]:
    archive = Path(studio["ann"].predict(studio["adapter"], api_name="/download_adapter"))
    with zipfile.ZipFile(archive) as opened:
        return {n: opened.read(n) for n in opened.namelist()}


class Boom:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_zips_with_traversal_or_pickles_are_refused_and_run_nothing(studio, tmp_path):
    ann, files = studio["ann"], _adapter_files(studio)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Boom(str(marker)))
    cases = {
        "traversal.zip": {**files, "../../escaped.txt": b"x"},
        "absolute.zip": {**files, "/tmp/escaped-abs.txt": b"x"},
        "pickle-bin.zip": {k: v for k, v in files.items() if not k.endswith(".safetensors")}
        | {"adapter_model.bin": payload},
        "pickle-named-safetensors.zip": {**files, "adapter_model.safetensors": payload},
    }
    before = len(ann.predict("", "", "", api_name="/list_adapters"))
    for name, members in cases.items():
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
        message = refused(ann, handle_file(str(path)), "minilm", "", api_name="/import_adapter")
        assert "Refused" in message or "not a readable safetensors" in message, (name, message)
    assert not marker.exists()
    assert not list(Path("/tmp").glob("escaped*")) and not (tmp_path / "escaped.txt").exists()
    assert len(ann.predict("", "", "", api_name="/list_adapters")) == before


def test_a_job_spec_naming_files_outside_the_uploads_isrefused(studio):
    ann, data = studio["ann"], studio["data"]
    for path in ("/etc/passwd", str(data / "ia3.db"), f"{data}/uploads/../ia3.db"):
        spec = {"model": "minilm", "data": path, "steps": 5}
        assert "is not a file you uploaded" in refused(ann, spec, None, None, api_name="/enqueue")
    spec = {"model": str(ROOT), "data": "sentiment", "steps": 5}
    assert "looks like a folder on the server" in refused(
        ann, spec, None, None, api_name="/enqueue"
    )
    assert "looks like a folder" in refused(ann, "/etc", "classify", api_name="/describe_model")


def test_names_with_path_traversal_stay_names(studio):
    ann, adapter = studio["ann"], studio["adapter"]
    renamed = ann.predict(adapter, "../../../etc/evil", api_name="/rename_adapter")
    assert renamed["name"] == "../../../etc/evil"
    archive = Path(ann.predict(adapter, api_name="/download_adapter"))
    assert ".." not in archive.name and archive.suffix == ".zip"
    assert list((studio["data"] / "downloads").glob("*"))  # written where downloads go
    assert not (studio["data"].parent / "etc").exists() and not Path("/etc/evil.zip").exists()
    ann.predict(adapter, "ann-formulas", api_name="/rename_adapter")


def test_bob_deleting_fails_and_root_deleting_works_last(studio):
    adapter = studio["adapter"]
    refused(studio["bob"], adapter, api_name="/delete_adapter")
    assert studio["ann"].predict(adapter, api_name="/adapter_info")["id"] == adapter
    assert studio["root"].predict(adapter, api_name="/delete_adapter") == adapter
    assert "among yours" in refused(studio["ann"], adapter, api_name="/adapter_info")
