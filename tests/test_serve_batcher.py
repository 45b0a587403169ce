"""The batching scheduler: requests for several adapters and the base merged into one forward
give each caller exactly what running its request alone gives; a full queue refuses with a
retry-after; a bad request fails alone. Batches are counted (stats), never timed."""

from __future__ import annotations

import threading

import pytest
import train_models as tm
from waiting import wait_for

from ia3engine.errors import AdapterError
from ia3engine.serve.batcher import Batcher, QueueFull
from ia3engine.serve.predict import Predictor, base_row

TEXTS = [text for text, _ in tm.sentiment_rows(12, seed=3)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("batcher")
    return tm.tiny_adapters(
        root,
        (
            ("a", "bert", "sentiment", "classify"),
            ("b", "bert", "flipped", "classify"),
            ("c", "bert", "sentiment", "classify"),
            ("g", "gpt2", tm.write_instructions(root / "i.jsonl"), "generate"),
            ("h", "gpt2", tm.write_instructions(root / "h.jsonl", 12), "generate"),
        ),
    )


@pytest.fixture(scope="module")
def classifier(folders):
    p = Predictor(folders["bert"], device="cpu")
    for name in ("a", "b", "c"):
        p.add_adapter(name, folders[name])
    return p


def _same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["label"] == w["label"]
        assert g["probs"].keys() == w["probs"].keys()
        for label, prob in w["probs"].items():
            assert g["probs"][label] == pytest.approx(prob, abs=1e-5)


REQUESTS = [  # (texts, adapter per row): several adapters and the base, mixed within requests
    (TEXTS[0:2], ["a", "a"]),
    (TEXTS[2:5], ["b", base_row("a"), "c"]),
    (TEXTS[5:6], [base_row("b")]),
    (TEXTS[6:9], ["c", "b", "a"]),
]


def test_a_mixed_batch_gives_each_request_what_it_gets_alone(classifier):
    alone = [classifier.predict(texts, names) for texts, names in REQUESTS]
    batcher = Batcher(classifier, max_batch_rows=32, start=False)
    futures = [batcher.submit(texts, names) for texts, names in REQUESTS]
    assert batcher.queued_rows == 9
    batcher.start()
    for future, want in zip(futures, alone, strict=True):
        _same(future.result(60), want)
    stats = batcher.stats()
    assert stats["batches"] == 1 and stats["rows_per_batch"] == [9]
    assert stats["requests"] == 4 and stats["queued_rows"] == 0
    batcher.close()


def test_base_rows_answer_the_same_whatever_else_is_in_the_batch(classifier):
    alone = classifier.predict(TEXTS[:3], [base_row("b")] * 3)
    batcher = Batcher(classifier, start=False)
    mixed = batcher.submit(TEXTS[:3], [base_row("b")] * 3)
    batcher.submit(TEXTS[3:5], ["a", "c"])  # another adapter first in line would not matter
    batcher.start()
    _same(mixed.result(60), alone)
    batcher.close()


def test_requests_from_many_threads_are_merged_and_each_gets_its_own_rows(classifier):
    batcher = Batcher(classifier, max_batch_rows=16, start=False)
    results, errors = {}, []
    names = ["a", "b", "c", base_row("c")]

    def call(i):
        texts = [TEXTS[i], TEXTS[(i + 5) % len(TEXTS)]]
        rows = [names[i % 4], names[(i + 1) % 4]]
        try:
            results[i] = (texts, rows, batcher.run(texts, rows, timeout=120))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: batcher.queued_rows == 16, 60, "16 rows queued", poll_s=0.01)
    batcher.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 8
    for texts, rows, got in results.values():
        _same(got, classifier.predict(texts, rows))
    assert batcher.stats()["rows_per_batch"] == [16]  # 8 requests, one forward
    batcher.close()


def test_batches_stop_at_max_batch_rows_and_keep_requests_whole(classifier):
    batcher = Batcher(classifier, max_batch_rows=5, start=False)
    futures = [batcher.submit(TEXTS[i : i + 3], ["a", "b", "c"]) for i in (0, 3, 6)]
    futures.append(batcher.submit(TEXTS[:2], ["b", "b"]))
    batcher.start()
    for future in futures:
        assert len(future.result(60)) in (2, 3)
    # the first request and the last (which fits beside it), then one request per batch
    assert batcher.stats()["rows_per_batch"] == [5, 3, 3]
    batcher.close()


def test_a_full_queue_refuses_with_a_retry_after_and_takes_requests_again_later(classifier):
    batcher = Batcher(classifier, max_queued_rows=4, start=False)
    first = batcher.submit(TEXTS[:3], ["a"] * 3)
    with pytest.raises(QueueFull, match="busy.*3 rows are waiting.*4") as refused:
        batcher.submit(TEXTS[:2], ["b"] * 2)
    assert refused.value.retry_after_s >= 1
    assert batcher.queued_rows == 3  # the refused request left nothing behind
    batcher.start()
    first.result(60)
    assert len(batcher.run(TEXTS[:4], ["b"] * 4, timeout=60)) == 4
    batcher.close()


def test_a_bad_request_fails_alone_and_the_others_in_its_batch_are_answered(classifier):
    alone = [classifier.predict(TEXTS[:2], ["a", "b"]), classifier.predict(TEXTS[2:3], ["c"])]
    batcher = Batcher(classifier, start=False)
    good = batcher.submit(TEXTS[:2], ["a", "b"])
    bad = batcher.submit(TEXTS[:1], ["no-such-adapter"])
    other = batcher.submit(TEXTS[2:3], ["c"])
    batcher.start()
    _same(good.result(60), alone[0])
    _same(other.result(60), alone[1])
    with pytest.raises(AdapterError, match="Unknown adapter.*no-such-adapter"):
        bad.result(60)
    stats = batcher.stats()
    assert stats["reruns"] == 1 and stats["requests"] == 3
    assert batcher.run(TEXTS[:1], ["a"], timeout=60)  # the scheduler still serves


def test_prepare_sees_each_batch_before_it_runs_and_its_failure_is_the_request_s(classifier):
    seen = []

    def prepare(batch):
        contexts = [request.context for request in batch]
        seen.append(contexts)
        if "broken" in contexts:
            raise AdapterError("adapter files unreadable")

    batcher = Batcher(classifier, prepare=prepare, start=False)
    ok = batcher.submit(TEXTS[:1], ["a"], context="fine")
    broken = batcher.submit(TEXTS[:1], ["b"], context="broken")
    batcher.start()
    assert ok.result(60)[0]["label"]
    with pytest.raises(AdapterError, match="unreadable"):
        broken.result(60)
    assert seen[0] == ["fine", "broken"] and ["fine"] in seen and ["broken"] in seen
    batcher.close()


def test_generation_batches_requests_with_the_same_token_budget(folders):
    p = Predictor(folders["gpt2"], task="generate", device="cpu")
    p.add_adapter("g", folders["g"])
    prompts = ["Say it again : the food was good", "Say it again : the book was bad"]
    alone = [p.predict([text], ["g"], max_new_tokens=4) for text in prompts]
    batcher = Batcher(p, start=False)
    futures = [batcher.submit([text], ["g"], max_new_tokens=4) for text in prompts]
    longer = batcher.submit(prompts[:1], [base_row("g")], max_new_tokens=6)
    batcher.start()
    for future, want in zip(futures, alone, strict=True):
        assert future.result(60) == want
    assert isinstance(longer.result(60)[0]["text"], str)
    assert sorted(batcher.stats()["rows_per_batch"]) == [1, 2]  # 4 tokens together, 6 apart
    batcher.close()


def test_close_answers_what_is_queued_then_refuses(classifier):
    batcher = Batcher(classifier, start=False)
    queued = batcher.submit(TEXTS[:1], ["a"])
    batcher.start()
    batcher.close()
    assert queued.result(60)
    with pytest.raises(QueueFull, match="unloaded"):
        batcher.submit(TEXTS[:1], ["a"])


def test_generation_rows_of_several_adapters_share_one_generate_call(folders, monkeypatch):
    p = Predictor(folders["gpt2"], task="generate", device="cpu")
    p.add_adapter("g", folders["g"])
    p.add_adapter("h", folders["h"])
    prompts = ["Say it again : the food was good", "Say it again : the hotel was very dull"]
    rows = [(prompts[0], "g"), (prompts[1], "h"), (prompts[1], base_row("g")), (prompts[0], "h")]
    alone = [p.predict([text], [name], max_new_tokens=5)[0] for text, name in rows]
    model, calls = p._groups["lm"], []
    real = model.generate

    def counted(*args, **kwargs):
        calls.append(kwargs.get("adapter_names"))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counted, raising=False)
    batcher = Batcher(p, start=False)
    futures = [batcher.submit([text], [name], max_new_tokens=5) for text, name in rows]
    batcher.start()
    assert [f.result(60)[0] for f in futures] == alone
    assert len(calls) == 1 and len(calls[0]) == 4  # one generate() for all four rows
    batcher.close()
