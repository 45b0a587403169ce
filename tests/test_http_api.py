"""The HTTP API's keys, scoping, bounds, errors and event stream, with a stand-in inference
server (the real one is app.inference's; test_http_classify runs it end to end)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import http_api
from app.inference import QueueFull, TooLarge
from ia3engine.errors import DataError
from jobs import access, api_keys
from jobs.errors import AccessDeniedError

ANN, BOB = access.user("ann"), access.user("bob")


class StandIn:
    """Ann owns adapter 1 and shares adapter 2 with bob; 'busy' fills the queue."""

    OWNERS = {"1": {"ann"}, "2": {"ann", "bob"}}

    def __init__(self):
        self.calls = []

    def _check(self, actor, adapter):
        if adapter == "busy":
            raise QueueFull("full", 2.5)
        if adapter == "huge":
            raise TooLarge("The batch is over the server's limit of 4096 tokens; send fewer texts.")
        if adapter == "boom":
            raise RuntimeError("/srv/secret/path exploded")
        if adapter == "bad":
            raise DataError("The text is empty; send at least one character.")
        if actor.name not in self.OWNERS.get(adapter, ()):
            raise AccessDeniedError(f"No adapter #{adapter} among yours.")

    def adapters(self, actor):
        return [{"id": int(k), "name": f"a{k}"} for k, v in self.OWNERS.items() if actor.name in v]

    def classify(self, actor, adapter, texts, **extra):
        self._check(actor, adapter)
        self.calls.append((actor.name, adapter, texts, extra))
        results = [{"label": "pos", "probs": {"pos": 0.75, "neg": 0.25}} for _ in texts]
        return {"adapter": {"id": int(adapter), "name": f"a{adapter}"}, "results": results}

    def generate(self, actor, adapter, prompt, max_new_tokens, **extra):
        self._check(actor, adapter)
        return {"text": "hello world"}

    def generate_stream(self, actor, adapter, prompt, max_new_tokens, **extra):
        self._check(actor, adapter)
        yield "hello"
        yield " world"
        if prompt == "fail midway":
            raise RuntimeError("/srv/secret broke")


@pytest.fixture
def api(db_url):
    app = FastAPI()
    server = StandIn()
    http_api.add_routes(app, server)
    client = TestClient(app, raise_server_exceptions=False)
    keys = {who.name: api_keys.create_key("t", actor=who)[1] for who in (ANN, BOB)}
    client.server, client.keys = server, keys
    return client


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _classify(api, who, adapter="1", texts=("good film",), **body):
    return api.post(
        "/v1/classify",
        json={"adapter": adapter, "texts": list(texts), **body},
        headers=_auth(api.keys[who]),
    )


def test_no_bad_or_revoked_key_gets_401_with_a_clear_message(api):
    body = {"adapter": "1", "texts": ["x"]}
    answer = api.post("/v1/classify", json=body)
    assert answer.status_code == 401 and "Authorization: Bearer" in answer.json()["error"]
    assert answer.headers["www-authenticate"] == "Bearer"
    for header in (
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        _auth(api.keys["ann"] + "x"),
    ):
        answer = api.post("/v1/classify", json=body, headers=header)
        assert answer.status_code == 401 and "error" in answer.json()
    assert _classify(api, "ann").status_code == 200
    info = api_keys.list_keys(actor=ANN)[0]
    api_keys.revoke_key(info.id, actor=ANN)
    answer = _classify(api, "ann")
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]
    assert api.get("/v1/adapters").status_code == 401
    assert api.server.calls == [("ann", "1", ["good film"], {})]  # refused calls reached nothing


def test_an_adapter_of_someone_else_is_the_same_404_as_a_missing_one(api):
    theirs, missing = _classify(api, "bob", "1"), _classify(api, "bob", "999")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace("'1'", "X") == missing.json()["error"].replace(
        "'999'", "X"
    )
    shared = _classify(api, "bob", "2", texts=["a", "b"])
    assert shared.status_code == 200
    assert [r["label"] for r in shared.json()["results"]] == ["pos", "pos"]
    listed = api.get("/v1/adapters", headers=_auth(api.keys["bob"])).json()["adapters"]
    assert [a["id"] for a in listed] == [2]
    gen = api.post(
        "/v1/generate", json={"adapter": "1", "prompt": "hi"}, headers=_auth(api.keys["bob"])
    )
    assert gen.status_code == 404


def test_too_much_text_is_413_and_bad_input_422_without_echoing_it(api):
    long = "x" * (http_api.MAX_CHARS + 1)
    answer = _classify(api, "ann", texts=["ok", long])
    assert answer.status_code == 413 and "(#2)" in answer.json()["error"]
    answer = api.post(
        "/v1/generate", json={"adapter": "1", "prompt": long}, headers=_auth(api.keys["ann"])
    )
    assert answer.status_code == 413 and "prompt" in answer.json()["error"]
    assert _classify(api, "ann", "huge").status_code == 413  # the server's own bound
    too_many = _classify(
        api, "ann", texts=["a"] * (http_api.MAX_TEXTS + 1)
    )  # 413 below it: the server's bound
    assert too_many.status_code == 422 and "texts" in too_many.json()["error"]
    for body in (
        {"adapter": "1", "prompt": "hi", "max_new_tokens": 10_000},
        {"adapter": "1", "prompt": "hi", "max_new_tokens": 0},
        {"adapter": "1", "prompt": "hi", "extra": "field"},
        {"prompt": "secret words"},
    ):
        answer = api.post("/v1/generate", json=body, headers=_auth(api.keys["ann"]))
        assert answer.status_code == 422 and "secret words" not in answer.text
    answer = api.post(
        "/v1/classify",
        content=b"{not json",
        headers={**_auth(api.keys["ann"]), "content-type": "application/json"},
    )
    assert answer.status_code == 422 and "error" in answer.json()
    answer = _classify(api, "ann", "bad")
    assert answer.status_code == 400 and "empty" in answer.json()["error"]
    big = api.post(
        "/v1/classify",
        content=b"x",
        headers={**_auth(api.keys["ann"]), "content-length": str(3 * 1024 * 1024)},
    )
    assert big.status_code == 413


def test_a_large_body_is_413_unread_even_in_chunks_and_without_a_key(api):
    def chunks():
        piece = b" " * 65536
        for _ in range(http_api.MAX_BODY_BYTES // len(piece) + 2):
            yield piece

    for headers in (_auth(api.keys["ann"]), {}):  # a key or none: refused before the key
        answer = api.post(
            "/v1/classify",
            content=chunks(),
            headers={**headers, "content-type": "application/json"},
        )
        assert answer.status_code == 413 and "KiB" in answer.json()["error"]
    assert _classify(api, "ann").status_code == 200  # a normal call still passes the limit


def test_a_full_queue_is_429_with_retry_after_and_failures_carry_no_traceback(api):
    answer = _classify(api, "ann", "busy")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    assert "Try again in 3 s" in answer.json()["error"]
    failed = _classify(api, "ann", "boom")
    assert failed.status_code == 500 and failed.json() == {"error": http_api.FAILED}
    assert "/srv" not in failed.text and "Traceback" not in failed.text


def test_generate_answers_whole_or_as_server_sent_events(api):
    key = _auth(api.keys["ann"])
    whole = api.post("/v1/generate", json={"adapter": "1", "prompt": "hi"}, headers=key)
    assert whole.json() == {"text": "hello world"}
    streamed = api.post(
        "/v1/generate", json={"adapter": "1", "prompt": "hi", "stream": True}, headers=key
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text == (
        'data: {"text": "hello"}\n\ndata: {"text": " world"}\n\nevent: done\ndata: {}\n\n'
    )
    busy = api.post(
        "/v1/generate", json={"adapter": "busy", "prompt": "hi", "stream": True}, headers=key
    )
    assert busy.status_code == 429  # a refusal is a status, not an event
    broken = api.post(
        "/v1/generate", json={"adapter": "1", "prompt": "fail midway", "stream": True}, headers=key
    )
    events = broken.text.strip().split("\n\n")
    assert events[-1].startswith("event: error\ndata: ")
    assert json.loads(events[-1].split("data: ", 1)[1]) == {"error": http_api.FAILED}


def test_the_openapi_page_lists_the_routes(api):
    spec = api.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/generate", "/v1/adapters"} <= set(spec["paths"])
    parameters = spec["paths"]["/v1/classify"]["post"]["parameters"]
    assert [p["name"] for p in parameters] == ["X-IA3-Share"]  # the share link, documented
    assert "labels" in json.dumps(spec["components"]["schemas"]["ClassifyRequest"])
    assert api.get("/docs").status_code == 200


def test_local_keys_count_only_where_the_host_is_local(db_url):
    _, key = api_keys.create_key("local", actor=access.LOCAL)
    for local_keys, status in ((True, 200), (False, 401)):
        app = FastAPI()
        http_api.add_routes(app, StandIn(), http_api.KeyPolicy(local_keys=local_keys))
        assert TestClient(app).get("/v1/adapters", headers=_auth(key)).status_code == status


def test_users_outside_the_allowed_list_are_refused(db_url):
    _, key = api_keys.create_key("t", actor=BOB)
    app = FastAPI()
    http_api.add_routes(app, StandIn(), http_api.KeyPolicy(allowed=frozenset({"ann"})))
    assert TestClient(app).get("/v1/adapters", headers=_auth(key)).status_code == 401
