"""Disk and memory stay bounded: previews keep no copy, downloads are made once and atomically,
each person has a storage quota, and the row cap applies while a file is read.

One studio without a worker, with a 1 MB storage quota per person and a 50-row cap: ann imports
an adapter and previews files; root (whose quota the module fills) uploads until refused.
"""

from __future__ import annotations

import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import PASSWORDS, raw_call, refused, running_studio
from gradio_client import Client, handle_file
from safetensors.torch import load as load_safetensors

ROWS_CAP = 50


def _reviews(path: Path, rows: int) -> Path:
    lines = [
        f"{'a fine film' if i % 2 else 'a dull film'} {i},{'pos' if i % 2 else 'neg'}"
        for i in range(rows)
    ]
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disk-studio")
    archive = minilm_adapter_zip(tmp)
    settings = {"IA3_MAX_STORAGE_MB": "1", "IA3_MAX_ROWS": str(ROWS_CAP)}
    with running_studio(tmp, workers=0, **settings) as attacked:
        ann = attacked.client("ann")
        adapter = ann.predict(
            handle_file(str(archive)), "minilm", "ann's", api_name="/import_adapter"
        )
        yield {"studio": attacked, "ann": ann, "adapter": adapter, "tmp": tmp}


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_previewing_a_file_keeps_no_copy_on_the_server(studio, tmp_path):
    data = studio["studio"].data
    for i in range(3):
        upload = _reviews(tmp_path / f"preview-{i}.csv", 12)
        info = studio["ann"].predict(
            handle_file(str(upload)), "", "", "classify", api_name="/describe_dataset"
        )
        assert info["n_rows"] == 12
    assert not [p for p in _files_under(data) if p.name.startswith("preview-")]


def test_a_file_over_the_row_cap_is_refused_by_the_preview(studio, tmp_path):
    big = _reviews(tmp_path / "many-rows.csv", ROWS_CAP * 40)
    message = refused(
        studio["ann"], handle_file(str(big)), "", "", "classify", api_name="/describe_dataset"
    )
    assert f"cap of {ROWS_CAP}" in message and "many-rows.csv" in message


def _valid_adapter_zip(data: bytes) -> bool:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        tensors = load_safetensors(archive.read("adapter_model.safetensors"))
    return bool(tensors) and all(".ia3_l" in name or "classifier" in name for name in tensors)


def test_parallel_downloads_of_one_adapter_all_get_a_valid_zip(studio):
    """Eight at once, through the API and through the share link's page (whose route runs
    requests side by side); a new name between rounds makes the zip be built again."""
    ann, adapter, url = studio["ann"], studio["adapter"], studio["studio"].url
    link = ann.predict(adapter, api_name="/share_adapter")

    def by_api(_):
        path = studio["studio"].client("ann").predict(adapter, api_name="/download_adapter")
        return Path(path).read_bytes()

    def by_link(_):
        answer = httpx.get(url + link.replace("?", "/download.zip?"), timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.content

    for round_ in range(3):
        ann.predict(adapter, f"ann's round {round_}", api_name="/rename_adapter")
        with ThreadPoolExecutor(8) as pool:
            zips = list(pool.map(by_link, range(8)))
            zips += list(pool.map(by_api, range(4)))
        assert all(_valid_adapter_zip(data) for data in zips)
    leftovers = [p for p in _files_under(studio["studio"].data / "downloads") if p.suffix != ".zip"]
    assert leftovers == []  # no half-written file left behind
    ann.predict(adapter, api_name="/unshare_adapter")


def test_viewing_an_adapter_again_makes_no_new_copy(studio):
    raw = Client(
        studio["studio"].url, auth=("ann", PASSWORDS["ann"]), verbose=False, download_files=False
    )
    first = [raw.predict(studio["adapter"], api_name="/download_adapter")["path"]]
    first.append(
        raw.predict(studio["adapter"], "adapter_config.json", api_name="/download_adapter_file")[
            "path"
        ]
    )
    for _ in range(3):
        again = raw.predict(studio["adapter"], api_name="/download_adapter")["path"]
        assert again == first[0]
        single = raw.predict(
            studio["adapter"], "adapter_config.json", api_name="/download_adapter_file"
        )["path"]
        assert single == first[1]
    zips = [p for p in _files_under(studio["studio"].data / "downloads") if p.suffix == ".zip"]
    assert len(zips) == 1


def test_uploads_past_the_storage_quota_are_refused_and_removed(studio, tmp_path):
    http = studio["studio"].http("root")
    blob = os.urandom(700 * 1024)  # two of these pass the 1 MB quota
    answers = []
    for i in range(3):
        (tmp_path / f"blob-{i}.txt").write_bytes(blob + bytes([i]))
        with open(tmp_path / f"blob-{i}.txt", "rb") as handle:
            answers.append(http.post("/gradio_api/upload", files={"files": handle}))
    assert answers[0].status_code == 200
    assert answers[1].status_code == 413 and answers[2].status_code == 413
    assert "IA3_MAX_STORAGE_MB" in answers[1].text and "Delete" in answers[1].text
    stored = answers[0].json()[0]
    assert os.path.isfile(stored)  # the first upload stays; the refused ones are gone
    cache = Path(stored).parent.parent  # this studio's upload folder
    for i in (1, 2):
        refused_copies = [
            p for p in cache.glob(f"*/blob-{i}.txt") if p.read_bytes() == blob + bytes([i])
        ]
        assert refused_copies == []


def test_imports_count_toward_the_storage_quota(studio):
    """root's uploads above left him about 300 KB: importing a 77 KB adapter again and again
    is refused (at the upload or at the import) before he stores much more than that."""
    archive = minilm_adapter_zip(studio["tmp"] / "again", "root-adapter.zip")
    http = studio["studio"].http("root")
    refusal = None
    for attempt in range(20):
        with open(archive, "rb") as handle:
            answer = http.post("/gradio_api/upload", files={"files": handle})
        if answer.status_code != 200:
            refusal = answer.text
            break
        zipped = {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}
        event, data = raw_call(http, "/import_adapter", zipped, "minilm", f"copy {attempt}")
        if event == "error":
            refusal = str(data)
            break
    assert refusal is not None and "IA3_MAX_STORAGE_MB" in refusal, refusal
    assert attempt <= 5


def _kept_for(data: Path, adapter: int) -> list[Path]:
    """The downloads ({id}-{hash}/) and merged exports (adapter-{id}-...) of one adapter."""
    return [
        *(data / "downloads").glob(f"{adapter}-*"),
        *(data / "exports").glob(f"adapter-{adapter}-*"),
    ]


def test_deleting_an_adapter_removes_its_downloads_and_merged_exports(studio):
    archive = minilm_adapter_zip(studio["tmp"] / "to-delete", "to-delete.zip")
    ann, data = studio["ann"], studio["studio"].data
    adapter = ann.predict(
        handle_file(str(archive)), "minilm", "to delete", api_name="/import_adapter"
    )
    ann.predict(adapter, api_name="/download_adapter")
    merged = ann.predict(adapter, api_name="/export_merged")
    with zipfile.ZipFile(merged) as zipped:
        assert "config.json" in zipped.namelist()
    assert _kept_for(data, adapter)  # made on disk, counted in ann's storage
    ann.predict(adapter, api_name="/delete_adapter")
    assert _kept_for(data, adapter) == []


def test_a_refused_upload_leaves_the_same_file_another_person_uploaded(studio, tmp_path):
    """Gradio names an upload by its bytes: bob, over his quota, uploads the very file ann
    uploaded; his copy is refused, and ann's file (the same path) stays hers to use."""
    shared = tmp_path / "reviews.csv"
    shared.write_bytes(os.urandom(400 * 1024))
    ann, bob = studio["studio"].http("ann"), studio["studio"].http("bob")
    with open(shared, "rb") as handle:
        answer = ann.post("/gradio_api/upload", files={"files": handle})
    assert answer.status_code == 200, answer.text
    stored = answer.json()[0]
    (tmp_path / "filler.bin").write_bytes(os.urandom(700 * 1024))
    with open(tmp_path / "filler.bin", "rb") as handle:
        assert bob.post("/gradio_api/upload", files={"files": handle}).status_code == 200
    with open(shared, "rb") as handle:
        refusal = bob.post("/gradio_api/upload", files={"files": handle})
    assert refusal.status_code == 413 and "IA3_MAX_STORAGE_MB" in refusal.text
    fetched = ann.get(f"/gradio_api/file={stored}")
    assert fetched.status_code == 200 and fetched.content == shared.read_bytes()
    assert bob.get(f"/gradio_api/file={stored}").status_code == 404  # still not his
