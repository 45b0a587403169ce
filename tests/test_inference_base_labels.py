"""Classify with the untuned base: rank classification over the labels a request names, equal
to the engine run alone (Predictor.add_untuned) on causal and seq2seq bases, in a batch beside
adapters' rows too; an encoder base, missing labels and labels an adapter lacks are refused
with messages naming the fix (422 over HTTP); label lists are bounded."""

from __future__ import annotations

import threading

import pytest
import train_models as tm
from fastapi.testclient import TestClient
from studio_support import inference_servers

from app import http_serve, inference
from app.inference_checks import MAX_LABELS
from ia3engine.errors import DataError
from ia3engine.serve.predict import Predictor
from jobs import access, api_keys, registry
from jobs.errors import AccessDeniedError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster
TEXTS = [text for text, _ in tm.sentiment_rows(4, seed=7)]
LABELS = ["positive", "negative", "dull"]
ANN, BOB = access.user("ann"), access.user("bob")
# The bases here are folders, which only the local user may name (a signed-in person names Hub
# ids: jobs.access_limits.check_model); ann's own checks are those before that one.
LOCAL = access.LOCAL


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("base-labels")
    runs = [("s", "bert", "sentiment", "classify"), ("c", "gpt2", "sentiment", "classify")]
    found = tm.tiny_adapters(root, runs)  # names of one letter: each seeds its run
    found["sent"], found["choice"] = found["s"], found["c"]
    found["t5"] = tm.save_tiny("t5", root / "t5")
    return found


@pytest.fixture
def served(db_url, folders):
    ids = {
        name: registry.register_adapter(folders[name], name=name, owner="ann")
        for name in ("sent", "choice")
    }
    with inference_servers() as server:
        yield ids, server


def _alone(base, labels, texts):
    predictor = Predictor(base, device="cpu")
    predictor.add_untuned(labels)
    return predictor.predict(texts)


def _same(got, want):
    assert [r["label"] for r in got] == [r["label"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert list(g["probs"]) == list(w["probs"])
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-5)


def test_the_base_ranks_the_labels_sent_as_the_engine_alone(served, folders):
    _, server = served
    serve = server()
    gpt2 = serve.classify(LOCAL, "base", TEXTS, model=folders["gpt2"], labels=LABELS)
    assert gpt2["adapter"] == "base" and gpt2["base_model"] == folders["gpt2"]
    _same(gpt2["results"], _alone(folders["gpt2"], LABELS, TEXTS))
    assert len({r["label"] for r in gpt2["results"]} | set(LABELS)) == 3
    t5 = serve.classify(
        access.LOCAL, "base", TEXTS[:2], model=folders["t5"], labels=["good", "bad"]
    )
    _same(t5["results"], _alone(folders["t5"], ["good", "bad"], TEXTS[:2]))
    other = serve.classify(LOCAL, "base", TEXTS[:2], model=folders["gpt2"], labels=["good", "bad"])
    _same(other["results"], _alone(folders["gpt2"], ["good", "bad"], TEXTS[:2]))


def test_base_rows_and_adapter_rows_share_a_batch_and_each_answers_as_alone(served, folders):
    ids, server = served
    serve = server(max_batch_rows=4, max_delay_ms=60_000)  # the batch runs once 4 rows wait
    base = registry.get_adapter(ids["choice"]).base_model
    serve.pool.served(base, "classify")
    answers = {}
    thread = threading.Thread(
        target=lambda: answers.update(
            base=serve.classify(LOCAL, "base", TEXTS[:2], model=base, labels=LABELS)
        )
    )
    thread.start()
    answers["adapter"] = serve.classify(ANN, "choice", TEXTS[2:4], labels=["negative", "positive"])
    thread.join(120)
    _same(answers["base"]["results"], _alone(folders["gpt2"], LABELS, TEXTS[:2]))
    predictor = Predictor(folders["gpt2"], device="cpu")
    predictor.add_adapter("x", folders["choice"])
    _same(answers["adapter"]["results"], predictor.predict(TEXTS[2:4], ["x", "x"]))
    (stats,) = serve.stats().values()
    assert stats["rows_per_batch"] == [4]  # one scheduler batch for both requests


def test_requests_the_base_cannot_answer_are_refused_naming_the_fix(served, folders):
    ids, server = served
    serve = server()
    bert = registry.get_adapter(ids["sent"]).base_model
    with pytest.raises(inference.Unprocessable, match="encoder: it has no head.*Train an adapter"):
        serve.classify(LOCAL, "base", TEXTS[:1], model=bert, labels=LABELS)
    with pytest.raises(DataError, match='add "labels"'):
        serve.classify(LOCAL, "base", TEXTS[:1], model=folders["gpt2"])
    with pytest.raises(inference.Unprocessable, match="answers with its own labels"):
        serve.classify(ANN, "sent", TEXTS[:1], labels=["good", "bad"])
    with pytest.raises(AccessDeniedError, match="not the base model of any adapter you may use"):
        serve.classify(BOB, "base", TEXTS[:1], model=folders["gpt2"], labels=LABELS)
    with pytest.raises(inference.TooLarge, match=f"most one request may name is {MAX_LABELS}"):
        serve.classify(LOCAL, "base", TEXTS[:1], model=folders["gpt2"], labels=list("x" * 51))
    with pytest.raises(DataError, match="same label twice"):
        serve.classify(LOCAL, "base", TEXTS[:1], model=folders["gpt2"], labels=["a", "a"])
    with pytest.raises(DataError, match="at least 2"):
        serve.classify(LOCAL, "base", TEXTS[:1], model=folders["gpt2"], labels=["a"])
    with pytest.raises(inference.TooLarge, match="label 2 has 101 characters"):
        serve.classify(LOCAL, "base", TEXTS[:1], model=folders["gpt2"], labels=["a", "b" * 101])


def test_over_http_the_base_answers_and_refusals_are_422(served, folders):
    ids, server = served
    serve = server()
    client = TestClient(http_serve.create_api(serve), raise_server_exceptions=False)
    _, key = api_keys.create_key("t", actor=LOCAL)
    headers = {"Authorization": f"Bearer {key}"}

    def classify(**body):
        return client.post("/v1/classify", json={"texts": TEXTS[:2], **body}, headers=headers)

    answer = classify(adapter="base", model=folders["gpt2"], labels=LABELS)
    assert answer.status_code == 200, answer.text
    _same(answer.json()["results"], _alone(folders["gpt2"], LABELS, TEXTS[:2]))
    bert = registry.get_adapter(ids["sent"]).base_model
    encoder = classify(adapter="base", model=bert, labels=LABELS)
    assert encoder.status_code == 422 and "no head" in encoder.json()["error"]
    mismatch = classify(adapter="sent", labels=["good", "bad"])
    assert mismatch.status_code == 422 and "its own labels" in mismatch.json()["error"]
    assert classify(adapter="sent", labels=["negative", "positive"]).status_code == 200
    too_many = classify(adapter="base", model=folders["gpt2"], labels=[f"l{i}" for i in range(51)])
    assert too_many.status_code == 422 and "labels" in too_many.json()["error"]
    assert "l50" not in too_many.text  # the input is not echoed
    assert (
        classify(adapter="base", model=folders["gpt2"], labels=["a", "b" * 101]).status_code == 422
    )
    assert "Traceback" not in encoder.text and bert not in encoder.text
