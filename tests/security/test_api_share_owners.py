"""Share links through the HTTP API on a running studio with sign-in: bob's key reaches ann's
adapter only with the link's token in X-IA3-Share, and only that one adapter, to classify and
list (read-only: no route changes it, and a share by token changes nothing); a guessed, wrong or
revoked token gets the same 404 as a missing adapter; nothing of ann's (her name, her other
adapter, the token) is in any answer. One studio, no worker (imported adapters: no training)."""

from __future__ import annotations

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import raw_call, running_studio, ui_event
from gradio_client import handle_file

SHARE = "X-IA3-Share"


def _make_key(http, name: str) -> str:
    done = ui_event(http, "apikey-create", "click", [name])
    assert done["success"], done
    secret = done["output"]["data"][3]
    return secret["value"] if isinstance(secret, dict) else secret


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api-shares")
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, workers=0) as attacked:
        ann = attacked.client("ann")
        shared = ann.predict(
            handle_file(str(archive)), "minilm", "ann-shared", api_name="/import_adapter"
        )
        private = ann.predict(
            handle_file(str(archive)), "minilm", "ann-private", api_name="/import_adapter"
        )
        link = ann.predict(shared, api_name="/share_adapter")
        yield {
            "studio": attacked,
            "ann": ann,
            "shared": str(shared),
            "private": str(private),
            "link": link,
            "token": link.split("token=")[1],
            "bob_key": _make_key(attacked.http("bob"), "bob's script"),
            "http": attacked.http(),
        }


def _call(studio, adapter: str, share: str | None = None, path="/v1/classify"):
    headers = {"Authorization": f"Bearer {studio['bob_key']}"}
    if share is not None:
        headers[SHARE] = share
    body = {"adapter": adapter, "texts": ["a great film"]}
    return studio["http"].post(path, json=body, headers=headers)


def _listed(studio, share: str | None = None) -> list[dict]:
    headers = {"Authorization": f"Bearer {studio['bob_key']}"}
    if share is not None:
        headers[SHARE] = share
    answer = studio["http"].get("/v1/adapters", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["adapters"]


def _same_404(answer, missing, adapter: str) -> None:
    assert answer.status_code == missing.status_code == 404
    assert answer.json()["error"].replace(repr(adapter), "X") == missing.json()["error"].replace(
        "'987654'", "X"
    )


def test_bobs_key_reaches_the_shared_adapter_only_with_its_token(studio):
    missing = _call(studio, "987654")
    _same_404(_call(studio, studio["shared"]), missing, studio["shared"])
    assert _listed(studio) == []
    for share in (studio["token"], studio["link"]):  # the token, or the link pasted whole
        answer = _call(studio, studio["shared"], share)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()["results"][0]["probs"]) == {"neg", "pos"}
        assert _call(studio, "ann-shared", share).status_code == 200  # by its name too
        (listed,) = _listed(studio, share)
        assert str(listed["id"]) == studio["shared"] and listed["shared"] is True
        assert listed["owner"] is None  # the share page does not say whose it is either


def test_the_token_lends_one_adapter_and_leaks_nothing_else(studio):
    token, private = studio["token"], studio["private"]
    missing = _call(studio, "987654", token)
    _same_404(_call(studio, private, token), missing, private)
    by_name = _call(studio, "ann-private", token)
    assert by_name.status_code == 404
    for answer in (missing, by_name, _call(studio, private, token)):
        assert "ann" not in answer.json()["error"].replace("'ann-private'", "")
        assert token not in answer.text
    assert [a["name"] for a in _listed(studio, token)] == ["ann-shared"]
    generated = studio["http"].post(
        "/v1/generate",
        json={"adapter": studio["shared"], "prompt": "hi"},
        headers={"Authorization": f"Bearer {studio['bob_key']}", SHARE: token},
    )
    assert generated.status_code == 400 and "classify" in generated.json()["error"]


def test_guessed_tokens_and_a_token_without_a_key_get_nothing(studio):
    token, shared = studio["token"], studio["shared"]
    missing = _call(studio, "987654")
    for guess in (token[:-1], token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 43, "", "%00"):
        _same_404(_call(studio, shared, guess), missing, shared)
    no_key = studio["http"].post(
        "/v1/classify", json={"adapter": shared, "texts": ["a"]}, headers={SHARE: token}
    )
    assert no_key.status_code == 401


def test_a_token_grants_no_writes(studio):
    token, shared = studio["token"], studio["shared"]
    headers = {"Authorization": f"Bearer {studio['bob_key']}", SHARE: token}
    http = studio["http"]
    for method, path in (
        ("DELETE", f"/v1/adapters/{shared}"),
        ("PUT", f"/v1/adapters/{shared}"),
        ("POST", f"/v1/adapters/{shared}/share"),
        ("POST", "/v1/adapters"),
    ):
        assert http.request(method, path, headers=headers).status_code in (404, 405)
    # the studio's own actions by bob (signed in) stay refused whatever token he holds
    bob = studio["studio"].http("bob", headers={SHARE: token})
    for elem in ("/delete_adapter", "/unshare_adapter", "/rename_adapter"):
        args = [int(shared), "bob's now"] if elem == "/rename_adapter" else [int(shared)]
        assert not _ok(bob, elem, args)
    assert _call(studio, shared, token).status_code == 200  # still there, still shared
    assert studio["ann"].predict(int(shared), api_name="/share_link") == studio["link"]


def _ok(http, api_name: str, args: list) -> bool:
    status, _ = raw_call(http, api_name, *args)
    return status == "complete"


def test_a_revoked_token_is_the_same_404_as_a_missing_adapter(studio):
    token, shared = studio["token"], studio["shared"]
    assert _call(studio, shared, token).status_code == 200
    studio["ann"].predict(int(shared), api_name="/unshare_adapter")
    _same_404(_call(studio, shared, token), _call(studio, "987654", token), shared)
    assert _listed(studio, token) == []
