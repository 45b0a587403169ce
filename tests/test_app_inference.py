"""The inference server: each person's adapters (by id or name) and only theirs, answers equal
to the Predictor alone even when requests of several people share a batch, bounded inputs
(TooLarge), a full queue (QueueFull), deletes and new versions reaching the cache."""

from __future__ import annotations

import threading

import pytest
import train_models as tm
from studio_support import inference_servers
from waiting import wait_for

from app import adapter_actions, auth, inference, model_pool, serving
from ia3engine import TrainSpec, train
from ia3engine.errors import AdapterError, DataError
from ia3engine.serve.predict import Predictor
from jobs import access, registry
from jobs.errors import AccessDeniedError

TEXTS = [text for text, _ in tm.sentiment_rows(8, seed=5)]
ANN, BOB = access.user("ann"), access.user("bob")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    found = {
        "bert": tm.save_tiny("bert", root / "bert"),
        "gpt2": tm.save_tiny("gpt2", root / "gpt2"),
    }
    data = tm.write_sentiment(root / "train.csv", 32)
    common = dict(steps=2, lr=0.2, head_lr=0.2, batch_size=8, eval_every=0, device="cpu")
    runs = (
        ("sent", "bert", data, "classify", 1),
        ("other", "bert", data, "classify", 2),
        ("echo", "gpt2", tm.write_instructions(root / "i.jsonl"), "generate", 3),
    )
    for name, model, source, task, seed in runs:
        folder = root / name
        train(
            TrainSpec(
                model=found[model], data=source, task=task, out_dir=str(folder), seed=seed, **common
            )
        )
        found[name] = folder
    return found


@pytest.fixture
def setup(db_url, folders):
    ids = {
        "sent": registry.register_adapter(folders["sent"], name="sent", owner="ann"),
        "other": registry.register_adapter(folders["other"], name="other", owner="ann"),
        "echo": registry.register_adapter(folders["echo"], name="echo", owner="ann"),
        "bobs": registry.register_adapter(folders["other"], name="bobs", owner="bob"),
    }
    with inference_servers() as server:
        yield ids, server


def _alone(folder, base, texts):
    p = Predictor(base, device="cpu")
    p.add_adapter("x", folder)
    return p.predict(texts, ["x"] * len(texts))


def _same(got, want):
    assert [r["label"] for r in got] == [r["label"] for r in want]
    for g, w in zip(got, want, strict=True):
        for label, prob in w["probs"].items():
            assert g["probs"][label] == pytest.approx(prob, abs=1e-5)


def test_classify_by_id_or_name_answers_as_the_adapter_alone(setup, folders):
    ids, server = setup
    serve = server()
    by_id = serve.classify(ANN, str(ids["sent"]), TEXTS[:3])
    assert by_id["adapter"] == {"id": ids["sent"], "name": "sent"}
    assert by_id["base_model"] == registry.get_adapter(ids["sent"]).base_model
    _same(by_id["results"], _alone(folders["sent"], folders["bert"], TEXTS[:3]))
    by_name = serve.classify(ANN, "other", TEXTS[3:5])
    _same(by_name["results"], _alone(folders["other"], folders["bert"], TEXTS[3:5]))


def test_several_peoples_requests_share_one_forward_and_each_gets_its_own(setup, folders):
    ids, server = setup
    serve = server(max_batch_rows=8, max_delay_ms=60_000)  # the batch runs once 8 rows wait
    serve.pool.served(registry.get_adapter(ids["sent"]).base_model, "classify")
    calls = [(ANN, "sent", TEXTS[0:2]), (ANN, "other", TEXTS[2:4]), (BOB, "bobs", TEXTS[4:6])]
    calls.append((ANN, str(ids["sent"]), TEXTS[6:8]))
    answers, errors = {}, []

    def call(i, actor, adapter, texts):
        try:
            answers[i] = serve.classify(actor, adapter, texts)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    folder_of = {"sent": "sent", "other": "other", "bobs": "other", str(ids["sent"]): "sent"}
    for i, (_, adapter, texts) in enumerate(calls):
        want = _alone(folders[folder_of[adapter]], folders["bert"], texts)
        _same(answers[i]["results"], want)
    (stats,) = serve.stats().values()
    assert stats["rows_per_batch"] == [8] and stats["adapters_loaded"] == 3


def test_another_persons_adapter_is_refused_like_a_missing_one(setup):
    ids, server = setup
    serve = server()
    with pytest.raises(AccessDeniedError) as theirs:
        serve.classify(BOB, str(ids["sent"]), TEXTS[:1])
    with pytest.raises(AccessDeniedError) as missing:
        serve.classify(BOB, "987654", TEXTS[:1])
    assert str(theirs.value).replace(f"'{ids['sent']}'", "'N'") == str(missing.value).replace(
        "'987654'", "'N'"
    )
    with pytest.raises(AccessDeniedError, match="No adapter 'sent' among yours"):
        serve.classify(BOB, "sent", TEXTS[:1])
    with pytest.raises(AccessDeniedError):
        serve.generate(BOB, "base", "hello", 4, model=registry.get_adapter(ids["echo"]).base_model)
    classify_base = registry.get_adapter(ids["sent"]).base_model
    with pytest.raises(AccessDeniedError, match="not the base model of any generate adapter"):
        serve.generate(ANN, "base", "hello", 4, model=classify_base)
    assert [a["name"] for a in serve.adapters(BOB)] == ["bobs"]
    assert {a["name"] for a in serve.adapters(ANN)} == {"sent", "other", "echo"}
    lent = access.Actor(None, shared_adapter=ids["sent"])  # a share link's visitor
    assert [a["id"] for a in serve.adapters(lent)] == [ids["sent"]]
    assert serve.classify(lent, str(ids["sent"]), TEXTS[:1])["results"]


def test_inputs_are_bounded_and_bad_ones_named(setup):
    ids, server = setup
    serve = server(max_texts=3)
    with pytest.raises(inference.TooLarge, match="4 texts.*most.*3"):
        serve.classify(ANN, "sent", TEXTS[:4])
    with pytest.raises(inference.TooLarge, match="text 2 has 20,001 characters"):
        serve.classify(ANN, "sent", ["fine", "x" * 20_001])
    with pytest.raises(inference.TooLarge, match="max_new_tokens=513"):
        serve.generate(ANN, "echo", "Say it again : good", 513)
    with pytest.raises(DataError, match="empty"):
        serve.classify(ANN, "sent", [])
    with pytest.raises(DataError, match="list of strings"):
        serve.classify(ANN, "sent", "one text")
    with pytest.raises(DataError, match="text 1 is not a string"):
        serve.classify(ANN, "sent", [3])
    with pytest.raises(DataError, match="adapter"):
        serve.classify(ANN, "x" * 300, ["fine"])
    with pytest.raises(AdapterError, match="generates text"):
        serve.classify(ANN, "echo", ["fine"])
    with pytest.raises(AdapterError, match="classifier"):
        serve.generate(ANN, "sent", "fine", 4)
    with pytest.raises(DataError, match='add "labels"'):  # the base answers with labels sent
        serve.classify(ANN, "base", ["fine"])


def test_a_full_queue_is_refused_with_a_retry_after(setup):
    ids, server = setup
    serve = server(max_queued_rows=2, max_texts=3)
    with pytest.raises(inference.QueueFull, match="busy") as refused:
        serve.classify(ANN, "sent", TEXTS[:3])
    assert refused.value.retry_after_s >= 1
    assert serve.classify(ANN, "sent", TEXTS[:2])["results"]


def test_one_person_holds_at_most_their_share_of_the_queue(setup):
    ids, server = setup
    serve = server(max_rows_per_user=3, max_texts=3, max_batch_rows=4, max_delay_ms=60_000)
    serve.pool.served(registry.get_adapter(ids["sent"]).base_model, "classify")
    waiting = {}
    thread = threading.Thread(
        target=lambda: waiting.update(ann=serve.classify(ANN, "sent", TEXTS[:2]))
    )
    thread.start()
    wait_for(lambda: serve._rows.get("ann") == 2, 60, "ann's 2 rows queued", poll_s=0.01)
    with pytest.raises(inference.QueueFull, match="2 rows queued.*IA3_SERVE_MAX_ROWS_PER_USER"):
        serve.classify(ANN, "sent", TEXTS[2:4])
    bob = serve.classify(BOB, "bobs", TEXTS[4:6])  # 4 rows: the batch runs, both answered
    thread.join(120)
    assert len(bob["results"]) == 2 and len(waiting["ann"]["results"]) == 2
    wait_for(lambda: serve._rows == {}, 60, "the rows released once answered", poll_s=0.01)


def test_generate_with_an_adapter_or_the_base_and_streamed(setup, folders):
    ids, server = setup
    serve = server()
    prompt = "Say it again : the food was good"
    p = Predictor(folders["gpt2"], task="generate", device="cpu")
    p.add_adapter("x", folders["echo"])
    want = p.predict([prompt], ["x"], max_new_tokens=5)[0]["text"]
    got = serve.generate(ANN, "echo", prompt, 5)
    assert got == {
        "adapter": {"id": ids["echo"], "name": "echo"},
        "base_model": folders["gpt2"],
        "text": want,
    }
    base = serve.generate(access.LOCAL, "base", prompt, 5, model=folders["gpt2"])
    assert base["adapter"] == "base" and isinstance(base["text"], str)
    pieces = list(serve.generate_stream(ANN, "echo", prompt, 5))
    assert "".join(pieces) == want
    assert len(pieces) > 1 or len(want.split()) < 2  # token by token, not once at the end


def test_a_deleted_adapter_leaves_the_cache_and_is_refused(setup, monkeypatch):
    ids, server = setup
    serve = server()
    monkeypatch.setattr(model_pool, "POOL", serve.pool)
    serve.classify(ANN, "sent", TEXTS[:1])
    (stats,) = serve.stats().values()
    assert stats["adapters_loaded"] == 1 and stats["adapter_bytes"] > 0
    with auth.acting_as(ANN):
        adapter_actions.delete_adapter(ids["sent"])
    (stats,) = serve.stats().values()
    assert stats["adapters_loaded"] == 0 and stats["adapter_bytes"] == 0
    with pytest.raises(AccessDeniedError):
        serve.classify(ANN, "sent", TEXTS[:1])


def test_the_playground_and_the_server_share_one_pool():
    assert inference.SERVER.pool is model_pool.POOL


def test_a_playground_request_and_a_programs_request_share_one_forward(setup, monkeypatch):
    ids, server = setup
    serve = server(max_batch_rows=3, max_delay_ms=60_000)  # the batch runs once 3 rows wait
    monkeypatch.setattr(serving, "POOL", serve.pool)
    answers = {}

    def playground():
        with auth.acting_as(ANN):
            answers["playground"] = serving.compare("the food was good", [ids["sent"]])

    thread = threading.Thread(target=playground)
    thread.start()
    answers["program"] = serve.classify(BOB, "bobs", ["the book was dull"])
    thread.join(120)
    compared = answers["playground"]
    assert compared["base"]["label"] and compared["adapters"][0]["id"] == ids["sent"]
    assert answers["program"]["results"][0]["label"]
    (stats,) = serve.stats().values()
    assert stats["rows_per_batch"] == [3]  # base + ann's adapter + bob's, one forward
