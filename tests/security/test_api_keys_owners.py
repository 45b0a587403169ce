"""The HTTP API and API keys on a running studio with sign-in: ann makes a key in the page and
classifies with her adapter over /v1; no key, a wrong key, a revoked key and a session cookie
get 401; bob's key cannot reach ann's adapter (the same 404 as a missing one) nor revoke her
key; too much text is 413; the data directory holds no key. One studio, no worker (an
imported adapter: no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import running_studio, ui_event
from gradio_client import handle_file

from app import http_api


def _make_key(http, name: str) -> str:
    done = ui_event(http, "apikey-create", "click", [name])
    assert done["success"], done
    secret = done["output"]["data"][3]
    key = secret["value"] if isinstance(secret, dict) else secret
    assert isinstance(key, str) and key.startswith("ia3_"), done
    return key


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api-keys")
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, workers=0) as attacked:
        ann = attacked.client("ann")
        adapter = ann.predict(
            handle_file(str(archive)), "minilm", "ann's", api_name="/import_adapter"
        )
        ann_http, bob_http = attacked.http("ann"), attacked.http("bob")
        yield {
            "studio": attacked,
            "adapter": str(adapter),
            "ann_http": ann_http,
            "bob_http": bob_http,
            "ann_key": _make_key(ann_http, "ann's script"),
            "bob_key": _make_key(bob_http, "bob's script"),
            "root_key": _make_key(attacked.http("root"), "root's script"),
            "anon": attacked.http(),
        }


def _classify(studio, key: str | None, adapter: str, texts=("a great film",), http=None):
    http = http or studio["anon"]
    headers = _bearer(key) if key else {}
    return http.post(
        "/v1/classify", json={"adapter": adapter, "texts": list(texts)}, headers=headers
    )


def test_ann_classifies_with_her_adapter_through_her_key(studio):
    answer = _classify(studio, studio["ann_key"], studio["adapter"], ["great", "awful"])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 2 and all(set(r["probs"]) == {"neg", "pos"} for r in results)
    listed = studio["anon"].get("/v1/adapters", headers=_bearer(studio["ann_key"])).json()
    assert [str(a["id"]) for a in listed["adapters"]] == [studio["adapter"]]


def test_no_key_a_wrong_key_or_a_session_cookie_is_401(studio):
    adapter, ann_key = studio["adapter"], studio["ann_key"]
    for key in (None, "ia3_00000000_" + "a" * 43, ann_key[:-2], ann_key + "A"):
        answer = _classify(studio, key, adapter)
        assert answer.status_code == 401 and set(answer.json()) == {"error"}
    # ann's signed-in browser session is no key: other sites cannot ride on it
    answer = _classify(studio, None, adapter, http=studio["ann_http"])
    assert answer.status_code == 401


def test_bobs_key_cannot_reach_anns_adapter_and_the_404_tells_nothing(studio):
    theirs = _classify(studio, studio["bob_key"], studio["adapter"])
    missing = _classify(studio, studio["bob_key"], "987654")
    assert theirs.status_code == missing.status_code == 404
    adapter = studio["adapter"]
    assert theirs.json()["error"].replace(repr(adapter), "X") == missing.json()["error"].replace(
        "'987654'", "X"
    )
    by_name = _classify(studio, studio["bob_key"], "ann's")  # her adapter's name
    assert by_name.status_code == 404
    assert by_name.json()["error"].replace('"ann\'s"', "X") == missing.json()["error"].replace(
        "'987654'", "X"
    )
    listed = studio["anon"].get("/v1/adapters", headers=_bearer(studio["bob_key"])).json()
    assert listed["adapters"] == []
    generated = studio["anon"].post(
        "/v1/generate",
        json={"adapter": adapter, "prompt": "hi"},
        headers=_bearer(studio["bob_key"]),
    )
    assert generated.status_code == 404


def test_too_much_text_is_413_and_bad_input_422(studio):
    key, adapter = studio["ann_key"], studio["adapter"]
    answer = _classify(studio, key, adapter, ["x" * (http_api.MAX_CHARS + 1)])
    assert answer.status_code == 413 and "characters" in answer.json()["error"]
    answer = _classify(studio, key, adapter, ["x"] * 65)  # over IA3_SERVE_MAX_TEXTS (64)
    assert answer.status_code == 413 and "IA3_SERVE_MAX_TEXTS" in answer.json()["error"]
    answer = _classify(studio, key, adapter, ["x"] * (http_api.MAX_TEXTS + 1))
    assert answer.status_code == 422 and "Traceback" not in answer.text


def test_bob_cannot_revoke_anns_key_and_the_data_holds_no_key(studio):
    done = ui_event(studio["bob_http"], "apikey-revoke", "click", [1])  # ann's key is #1
    assert done["success"] and "No API key #1 among yours" in done["output"]["data"][2]
    assert _classify(studio, studio["ann_key"], studio["adapter"]).status_code == 200
    data: Path = studio["studio"].data
    for path in data.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            for key in (studio["ann_key"], studio["bob_key"]):
                assert key.encode() not in raw, path.name
    assert studio["ann_key"] not in studio["studio"].log_text()


def test_a_revoked_key_stops_at_once(studio):
    ann_http = studio["ann_http"]
    key = _make_key(ann_http, "short-lived")
    assert _classify(studio, key, studio["adapter"]).status_code == 200
    config = ann_http.get("/config").json()
    listed = ui_event(ann_http, "apikey-create", "click", [""])  # refused: no name; lists keys
    choices = listed["output"]["data"][1]["choices"]
    key_id = next(value for label, value in choices if "short-lived" in label)
    assert config and ui_event(ann_http, "apikey-revoke", "click", [key_id])["success"]
    answer = _classify(studio, key, studio["adapter"])
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]


def test_an_admins_key_reaches_every_adapter(studio):
    answer = _classify(studio, studio["root_key"], studio["adapter"])
    assert answer.status_code == 200, answer.text
    listed = studio["anon"].get("/v1/adapters", headers=_bearer(studio["root_key"])).json()
    assert [str(a["id"]) for a in listed["adapters"]] == [studio["adapter"]]
