"""Publishing to the Hugging Face Hub, attacked on a running studio with sign-in (offline: the
upload itself never runs here). bob cannot publish ann's adapter through the API or the page
and hears what he would for a missing one; root (an admin) cannot republish it either; ann gets
as far as the network and is told the studio is offline; her token shows up in no answer, no
log line and no file of the studio's data directory, its SQLite database included."""

from __future__ import annotations

import json

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import PASSWORDS, refused, running_studio, signed_in, ui_event
from gradio_client import handle_file

TOKEN = "hf_ANNSsecretWriteToken0123456789"
MISSING = 99999


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish-owners")
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, workers=0) as attacked:
        clients = {name: attacked.client(name) for name in PASSWORDS}
        adapter = clients["ann"].predict(
            handle_file(str(archive)), "minilm", "ann's", api_name="/import_adapter"
        )
        yield {**clients, "studio": attacked, "adapter": adapter}


def _same(message: str, adapter_id: int) -> str:
    return message.replace(f"#{adapter_id}", "#N")


def test_bob_and_root_cannot_publish_anns_adapter_and_hear_it_is_missing(studio):
    adapter = studio["adapter"]
    for name in ("bob", "root"):
        client = studio[name]
        theirs = refused(client, adapter, "bob/stolen", TOKEN, False, api_name="/publish_adapter")
        missing = refused(client, MISSING, "bob/stolen", TOKEN, False, api_name="/publish_adapter")
        assert "No adapter #N among yours" in _same(theirs, adapter)
        assert _same(theirs, adapter) == _same(missing, MISSING)
        assert TOKEN not in theirs
    anonymous = (
        studio["studio"]
        .http()
        .post("/gradio_api/call/publish_adapter", json={"data": [adapter, "x/y", TOKEN, True]})
    )
    assert anonymous.status_code == 401 and TOKEN not in anonymous.text


def test_bob_cannot_publish_it_from_the_page_either(studio):
    adapter = studio["adapter"]
    bob = signed_in(studio["studio"].url, "bob")
    answer = ui_event(bob, "publish-button", "click", [adapter, "bob/stolen", TOKEN, True])
    shown = json.dumps(answer)
    # Refused before the handler (not one of bob's adapters in his view), never published.
    assert answer["success"] is False and "Published" not in shown
    assert TOKEN not in shown


def test_ann_is_told_what_is_missing_and_her_token_is_kept_nowhere(studio):
    ann, adapter = studio["ann"], studio["adapter"]
    no_token = refused(ann, adapter, "ann/reviews", "", True, api_name="/publish_adapter")
    assert "No Hugging Face token" in no_token
    bad_name = refused(ann, adapter, "ann/re--views", TOKEN, True, api_name="/publish_adapter")
    assert "not a valid Hub name" in bad_name and TOKEN not in bad_name
    offline = refused(ann, adapter, "ann/reviews", TOKEN, True, api_name="/publish_adapter")
    assert "HF_HUB_OFFLINE" in offline and TOKEN not in offline
    assert ann.predict(adapter, api_name="/adapter_info")["name"] == "ann's"  # still hers
    attacked = studio["studio"]
    assert TOKEN not in attacked.log_text()
    database = attacked.data / "ia3.db"
    assert database.is_file()
    for path in attacked.data.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path.name
