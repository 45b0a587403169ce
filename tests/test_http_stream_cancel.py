"""A streaming client that goes away stops its row: over real HTTP (uvicorn on a socket), a
client that closes the connection after the first event ends its generation early (a prefix of
the full text, far short of max_new_tokens), its rows in flight return to 0, and the next
request of the same person (one row allowed in flight) is answered; the scheduler's own
stop() of a queued request cancels it, of a running one ends its rows alone."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import train_models as tm
import uvicorn
from studio_support import free_port
from waiting import wait_for

from app import http_serve, inference
from app.model_pool import PredictorPool
from app.serve_settings import ServeSettings
from ia3engine.serve.batcher import Batcher
from ia3engine.serve.predict import Predictor
from jobs import access, api_keys, registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster
ANN = access.user("ann")
PROMPT = "Say it again : the food was good"
NEW_TOKENS = 100  # the tiny GPT-2 holds 128 positions
STEP_S = 0.05  # each decoding step made this much slower, so a whole generation takes seconds


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-cancel")
    data = tm.write_instructions(root / "i.jsonl")
    return tm.tiny_adapters(root, [("e", "gpt2", data, "generate")])


def _slowed(predictor, outputs: list):
    """predictor.predict with every step of a stoppable row slowed (its should_stop is asked
    once a step), recording each call's outputs."""
    original = predictor.predict

    def slow(step):
        def stop():
            time.sleep(STEP_S)
            return step()

        return stop

    def predict(texts, names, **kwargs):
        if kwargs.get("should_stop"):
            kwargs["should_stop"] = {row: slow(s) for row, s in kwargs["should_stop"].items()}
        outputs.append(original(texts, names, **kwargs))
        return outputs[-1]

    return predict


@pytest.fixture
def running(db_url, folders):
    adapter = registry.register_adapter(folders["e"], name="echo", owner="ann")
    pool = PredictorPool(ServeSettings(max_rows_per_user=1))
    serve = inference.InferenceServer(pool, timeout_s=120)
    served = pool.served(folders["gpt2"], "generate")
    outputs: list = []
    served.predictor.predict = _slowed(served.predictor, outputs)
    port = free_port()
    config = uvicorn.Config(http_serve.create_api(serve), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, "uvicorn started")
    _, key = api_keys.create_key("t", actor=ANN)
    yield {
        "url": f"http://127.0.0.1:{port}",
        "headers": {"Authorization": f"Bearer {key}"},
        "adapter": str(adapter),
        "serve": serve,
        "outputs": outputs,
        "batcher": served.batcher,
    }
    server.should_exit = True
    thread.join(30)
    pool.close()


def test_a_client_that_goes_away_stops_its_row_and_frees_its_place(running, folders):
    full = Predictor(folders["gpt2"], task="generate", device="cpu")
    full.add_adapter("x", folders["e"])
    whole = full.predict([PROMPT], ["x"], max_new_tokens=NEW_TOKENS)[0]["text"]
    assert len(whole.split()) > 60  # the tiny model writes on: a whole run takes seconds
    body = {"adapter": running["adapter"], "prompt": PROMPT, "max_new_tokens": NEW_TOKENS}
    with httpx.Client(base_url=running["url"], timeout=60) as client:
        with client.stream(
            "POST", "/v1/generate", json={**body, "stream": True}, headers=running["headers"]
        ) as answer:
            assert answer.status_code == 200
            first = next(line for line in answer.iter_lines() if line.startswith("data: "))
            assert '"text"' in first
        # the connection is closed here, mid-stream
    serve = running["serve"]
    wait_for(lambda: serve._rows == {}, 60, "ann's row released", poll_s=0.01)
    wait_for(lambda: running["outputs"], 60, "the generation ended")
    (stopped,) = running["outputs"][0]
    assert whole.startswith(stopped["text"])
    assert len(stopped["text"].split()) < len(whole.split()) // 2  # ended early, not at the end
    # ann may hold one row: her next request is answered, not refused as still in flight
    with httpx.Client(base_url=running["url"], timeout=120) as client:
        again = client.post(
            "/v1/generate", json={**body, "max_new_tokens": 3}, headers=running["headers"]
        )
    assert again.status_code == 200, again.text
    assert whole.startswith(again.json()["text"])


def test_stop_cancels_a_queued_request_and_ends_a_running_row_alone(folders):
    predictor = Predictor(folders["gpt2"], task="generate", device="cpu")
    predictor.add_adapter("x", folders["e"])
    outputs: list = []
    predictor.predict = _slowed(predictor, outputs)
    batcher = Batcher(predictor, max_batch_rows=2, max_delay_s=60, start=False)
    pieces: dict = {0: [], 1: []}

    def piece_to(i):
        return lambda _row, text: pieces[i].append(text)

    kept = batcher.submit([PROMPT], ["x"], max_new_tokens=NEW_TOKENS // 2, on_piece=piece_to(0))
    ended = batcher.submit([PROMPT], ["x"], max_new_tokens=NEW_TOKENS // 2, on_piece=piece_to(1))
    queued = batcher.submit([PROMPT], ["x"], max_new_tokens=NEW_TOKENS // 2)
    queued.stop()
    assert queued.cancelled()
    batcher.start()
    wait_for(lambda: pieces[1], 60, "the second row streaming")
    ended.stop()
    whole, cut = kept.result(120)[0]["text"], ended.result(120)[0]["text"]
    batcher.close()
    assert whole.startswith(cut) and len(cut.split()) < len(whole.split())
    assert "".join(pieces[0]) == whole  # the row that went on streamed all of its text
