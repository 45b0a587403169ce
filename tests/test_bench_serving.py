"""bench/serving.py's own helpers: Zipf draws follow 1/rank, the registered copies are distinct
adapters, and the PEFT server the bench compares against answers what ours answers."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import train_models as tm
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not a package on the tests' path

from app.inference import InferenceServer  # noqa: E402
from app.model_pool import PredictorPool  # noqa: E402
from app.serve_settings import ServeSettings  # noqa: E402
from bench import serving  # noqa: E402
from bench.serving_servers import peft_app  # noqa: E402
from bench.serving_support import Zipf, percentile, register_copies, short_texts  # noqa: E402
from jobs import access, registry  # noqa: E402


def test_zipf_draws_follow_one_over_rank():
    zipf = Zipf(1000, 1.0, seed=3)
    harmonic = sum(1 / k for k in range(1, 1001))
    assert zipf.probability(0) == pytest.approx(1 / harmonic)
    assert sum(zipf.probability(k) for k in range(1000)) == pytest.approx(1.0)
    draws = Counter(zipf.sample() for _ in range(40_000))
    assert set(draws) <= set(range(1000))
    assert draws[0] / 40_000 == pytest.approx(1 / harmonic, abs=0.01)  # about 13.4 %
    assert draws[1] / 40_000 == pytest.approx(0.5 / harmonic, abs=0.01)
    assert draws[0] > draws[9] * 5  # rank 10 is ten times rarer
    assert len(draws) > 500  # the tail is drawn too
    first, second = Zipf(50, 1.0, seed=9), Zipf(50, 1.0, seed=9)  # seeded: repeatable
    assert [first.sample() for _ in range(100)] == [second.sample() for _ in range(100)]


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


@pytest.fixture(scope="module")
def seed_adapter(tmp_path_factory):
    return tm.train_adapter(tmp_path_factory.mktemp("bench-serving") / "seed", ("neg", "pos"))


def test_the_peft_server_answers_what_ours_answers(db_url, seed_adapter):
    ids = register_copies(seed_adapter, 2, seed=1)
    infos = [registry.get_adapter(i) for i in ids]
    assert len({info.sha256 for info in infos}) == 2  # perturbed: two distinct adapters
    assert {info.base_model for info in infos} == {"minilm"}
    texts = short_texts(4, seed=2)
    pool = PredictorPool(ServeSettings())
    ours = InferenceServer(pool, timeout_s=120)
    peft = TestClient(peft_app())
    try:
        answers = {}
        for adapter_id in ids:
            mine = ours.classify(access.LOCAL, str(adapter_id), texts)["results"]
            got = peft.post("/v1/classify", json={"adapter": str(adapter_id), "texts": texts})
            assert got.status_code == 200, got.text
            theirs = got.json()["results"]
            assert [r["label"] for r in theirs] == [r["label"] for r in mine]
            for row, want in zip(theirs, mine, strict=True):
                assert row["probs"] == pytest.approx(want["probs"], abs=1e-5)
            answers[adapter_id] = [r["probs"]["pos"] for r in mine]
        assert answers[ids[0]] != pytest.approx(answers[ids[1]], abs=1e-6)
        missing = peft.post("/v1/classify", json={"adapter": "999", "texts": texts})
        assert missing.status_code == 404
    finally:
        pool.close()


def test_the_report_without_the_peft_peer_shows_ours_and_the_ceiling():
    point = {"rps": 10.0, "p50_ms": 5.0, "p99_ms": 9.0}
    cold = {"adapters": 2, "cold_ms": 3.0, "warm_ms": 1.0, "load_ms": 2.0}
    results = {
        "adapters": 3,
        "peft": False,
        "points": [{"clients": 32, "ours": point, "ceiling": {**point, "rps": 8.0}}],
        "memory": {"ours": {"cache_mb": 70.0, "rss_delta_mb": 120.0}},
        "cold": {"ours": cold},
        "load_all_s": {"ours": 1.5},
    }
    results["points"][0]["peft"] = serving.NOT_RUN
    rows = serving.table(results).splitlines()
    assert rows[-1].startswith("| 32 | 10.0 | 8.0 | - |") and rows[-1].endswith("| 1.25 | - |")
    text = serving.summary(results)
    assert "ours/ceiling 1.25" in text and "PEFT" not in text
