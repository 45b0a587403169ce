"""The adapter cache on a real Predictor: the bytes counted are the tensors the adapter holds,
the budget evicts least recently used first, a new version and a delete invalidate, and an
adapter evicted and loaded again answers as before."""

from __future__ import annotations

import pytest
import train_models as tm
from safetensors.torch import load_file

from app.adapter_cache import AdapterCache, AdapterSource
from ia3engine import TrainSpec, train
from ia3engine.serve.predict import Predictor

TEXTS = [text for text, _ in tm.sentiment_rows(4, seed=9)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    found = {"bert": tm.save_tiny("bert", root / "bert")}
    data = tm.write_sentiment(root / "train.csv", 16)
    for adapter_id in (1, 2, 3):
        folder = root / f"a{adapter_id}"
        spec = TrainSpec(
            model=found["bert"],
            data=data,
            out_dir=str(folder),
            steps=1,
            lr=0.2,
            head_lr=0.2,
            batch_size=8,
            eval_every=0,
            device="cpu",
            seed=adapter_id,
        )
        train(spec)
        found[adapter_id] = folder
    return found


def _cache(folders, budget):
    predictor = Predictor(folders["bert"], device="cpu")
    return AdapterCache(predictor, budget, folder_of=lambda i: folders[i])


def _file_bytes(folder) -> int:
    """Bytes held for the adapter in `folder`: its file's vectors and head, and the head again
    for its untuned twin (the base row), whose vectors are ones shared by every twin."""
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    vectors = sum(t.numel() * t.element_size() for k, t in tensors.items() if "ia3_l" in k)
    heads = sum(t.numel() * t.element_size() for k, t in tensors.items() if "ia3_l" not in k)
    assert vectors > 0 and heads > 0
    return vectors + 2 * heads


def test_the_bytes_counted_are_the_adapters_tensors_held(folders):
    cache = _cache(folders, 10**9)
    cache.ensure([AdapterSource(1, "aaaa")])
    assert cache.bytes_held == _file_bytes(folders[1])
    assert cache.keys() == ["adapter1-aaaa"]
    cache.ensure([AdapterSource(2, "bbbb")])  # a second twin adds its head, not more ones
    assert cache.bytes_held == _file_bytes(folders[1]) + _file_bytes(folders[2])
    model = next(iter(cache.predictor._groups.values()))
    twins = [
        (layer.ia3_l["adapter1-aaaa__untuned"], layer.ia3_l["adapter2-bbbb__untuned"])
        for _, layer in model.ia3_layers()
    ]
    assert twins and all(a is b and bool((a == 1).all()) for a, b in twins)


def test_the_least_recently_used_adapters_leave_when_the_bytes_run_over(folders):
    one = _file_bytes(folders[1])
    cache = _cache(folders, int(2.5 * one))
    want = {}
    for adapter_id in (1, 2):
        cache.ensure([AdapterSource(adapter_id, "s")])
        want[adapter_id] = cache.predictor.predict(TEXTS, [f"adapter{adapter_id}-s"] * 4)
    cache.ensure([AdapterSource(1, "s")])  # 2 is now the least recently used
    cache.ensure([AdapterSource(3, "s")])
    assert cache.keys() == ["adapter1-s", "adapter3-s"] and cache.bytes_held == 2 * one
    assert sorted(cache.predictor.adapters) == ["adapter1-s", "adapter3-s"]
    cache.ensure([AdapterSource(2, "s")])  # loaded again: the same answers
    again = cache.predictor.predict(TEXTS, ["adapter2-s"] * 4)
    for got, expected in zip(again, want[2], strict=True):
        assert got["probs"] == pytest.approx(expected["probs"], abs=1e-6)
    assert cache.loads == 4


def test_a_new_version_replaces_the_old_and_forget_drops_an_adapter(folders):
    cache = _cache(folders, 10**9)
    cache.ensure([AdapterSource(1, "old"), AdapterSource(2, "s")])
    cache.ensure([AdapterSource(1, "new")])
    assert set(cache.keys()) == {"adapter2-s", "adapter1-new"}
    cache.forget(2)
    assert cache.keys() == ["adapter1-new"]
    assert sorted(cache.predictor.adapters) == ["adapter1-new"]


def test_one_batchs_adapters_stay_even_when_they_alone_exceed_the_budget(folders):
    cache = _cache(folders, 1)
    cache.ensure([AdapterSource(1, "s"), AdapterSource(2, "s")])
    assert set(cache.keys()) == {"adapter1-s", "adapter2-s"}
    cache.ensure([AdapterSource(3, "s")])
    assert cache.keys() == ["adapter3-s"]
