"""The HTTP API on the real inference server: a classify through /v1 equals the Predictor's
own answer, generation streams the same text it returns whole, and two `ia3 serve` processes
on one database serve the same keys and adapters (one made after they started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import train_models as tm
from fastapi.testclient import TestClient
from studio_support import free_port, wait_until_up

from app import http_serve, inference
from app.model_pool import PredictorPool
from app.serve_settings import ServeSettings
from ia3engine.serve.predict import Predictor
from jobs import access, api_keys, registry

ROOT = Path(__file__).resolve().parents[1]
ANN = access.user("ann")
TEXTS = [text for text, _ in tm.sentiment_rows(6, seed=3)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-classify")
    base, folder = tm.tiny_classifier(root)
    return {"base": base, "adapter": folder, "gpt2": tm.save_tiny("gpt2", root / "gpt2")}


@pytest.fixture
def client(db_url, tiny):
    pool = PredictorPool(ServeSettings())
    app = http_serve.create_api(inference.InferenceServer(pool, timeout_s=120))
    yield TestClient(app, raise_server_exceptions=False)
    pool.close()


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_a_classify_over_http_equals_the_predictor_alone(client, tiny):
    adapter_id = registry.register_adapter(tiny["adapter"], name="sent", owner="ann")
    _, key = api_keys.create_key("t", actor=ANN)
    body = {"adapter": str(adapter_id), "texts": TEXTS}
    answer = client.post("/v1/classify", json=body, headers=_bearer(key))
    assert answer.status_code == 200, answer.text
    predictor = Predictor(tiny["base"], device="cpu")
    predictor.add_adapter("x", tiny["adapter"])
    alone = predictor.predict(TEXTS, ["x"] * len(TEXTS))
    got = answer.json()
    assert got["adapter"] == {"id": adapter_id, "name": "sent"}
    assert [r["label"] for r in got["results"]] == [r["label"] for r in alone]
    for row, want in zip(got["results"], alone, strict=True):
        assert row["probs"] == pytest.approx(want["probs"], abs=1e-5)
    by_name = client.post(
        "/v1/classify", json={"adapter": "sent", "texts": TEXTS[:1]}, headers=_bearer(key)
    )
    # one text alone against the first of a batch: the same answer within 1e-5 (the bar),
    # not bit for bit, since the padding and the kernels can differ with the batch's shape
    # and torch's thread count (exact equality failed on one thread)
    one, first = by_name.json()["results"][0], got["results"][0]
    assert one["label"] == first["label"]
    assert one["probs"] == pytest.approx(first["probs"], abs=1e-5)
    generate = client.post(
        "/v1/generate", json={"adapter": str(adapter_id), "prompt": "hi"}, headers=_bearer(key)
    )
    assert generate.status_code == 400 and "classify" in generate.json()["error"]


def test_generation_streams_the_text_it_returns_whole(client, tiny):
    _, key = api_keys.create_key("local", actor=access.LOCAL)  # the local user may name a base
    body = {"adapter": "base", "model": tiny["gpt2"], "prompt": "the film", "max_new_tokens": 5}
    whole = client.post("/v1/generate", json=body, headers=_bearer(key))
    assert whole.status_code == 200, whole.text
    streamed = client.post("/v1/generate", json={**body, "stream": True}, headers=_bearer(key))
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = streamed.text.split("\n\n")
    pieces = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
    assert events[-2:] == ["event: done\ndata: {}", ""]
    text = "".join(httpx.Response(200, content=p).json()["text"] for p in pieces)
    assert text == whole.json()["text"]
    assert len(text.split()) > 1 and len(pieces) > 1  # a piece per token, as they come


def _serve(port: int, tmp: Path, db_url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IA3_", "SPACE_"))}
    env.update(HF_HUB_OFFLINE="1", IA3_DATABASE_URL=db_url, IA3_DATA_DIR=str(tmp / f"d{port}"))
    log = open(tmp / f"serve-{port}.log", "w")  # noqa: SIM115 - the process owns it
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_two_serve_processes_on_one_database_share_keys_and_adapters(db_url, tiny, tmp_path):
    ports = [free_port(), free_port()]
    processes = [_serve(port, tmp_path, db_url) for port in ports]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_until_up(
                f"http://127.0.0.1:{port}/docs", process, tmp_path / f"serve-{port}.log", 120
            )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        spec = httpx.get(urls[0] + "/openapi.json").json()
        assert {"/v1/classify", "/v1/generate", "/v1/adapters"} <= set(spec["paths"])
        assert httpx.get(urls[1] + "/").status_code == 404  # the API alone, no studio
        _, key = api_keys.create_key("both", actor=ANN, db=db_url)
        for url in urls:
            assert httpx.get(url + "/v1/adapters", headers=_bearer(key)).json() == {"adapters": []}
        adapter_id = registry.register_adapter(tiny["adapter"], name="late", owner="ann", db=db_url)
        body = {"adapter": str(adapter_id), "texts": TEXTS[:2]}
        answers = [
            httpx.post(url + "/v1/classify", json=body, headers=_bearer(key), timeout=120)
            for url in urls
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        first, second = (a.json()["results"] for a in answers)
        assert [r["label"] for r in first] == [r["label"] for r in second]
        for one, other in zip(first, second, strict=True):
            assert one["probs"] == pytest.approx(other["probs"], abs=1e-5)
        info = api_keys.list_keys(actor=ANN, db=db_url)[0]
        api_keys.revoke_key(info.id, actor=ANN, db=db_url)
        for url in urls:
            assert httpx.get(url + "/v1/adapters", headers=_bearer(key)).status_code == 401
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def test_more_rows_than_a_person_may_hold_is_429_with_retry_after(db_url, tiny):
    pool = PredictorPool(ServeSettings(max_rows_per_user=2))
    client = TestClient(http_serve.create_api(inference.InferenceServer(pool, timeout_s=120)))
    try:
        adapter_id = registry.register_adapter(tiny["adapter"], name="sent", owner="ann")
        _, key = api_keys.create_key("t", actor=ANN)
        body = {"adapter": str(adapter_id), "texts": TEXTS[:3]}
        answer = client.post("/v1/classify", json=body, headers=_bearer(key))
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        assert "IA3_SERVE_MAX_ROWS_PER_USER" in answer.json()["error"]
        body["texts"] = TEXTS[:2]
        assert client.post("/v1/classify", json=body, headers=_bearer(key)).status_code == 200
    finally:
        pool.close()
