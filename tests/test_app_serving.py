"""The served models' pool: adapters loaded under their id and weights' hash, dropped on delete
or a new version, within a byte budget per base; bases within a count and a byte budget. A
stand-in Predictor records what is loaded (no model needed)."""

from __future__ import annotations

import pytest

from app import adapter_actions, model_pool, serving
from app.serve_settings import ServeSettings
from ia3engine.errors import ConfigError
from ia3engine.serve import predict
from jobs import access, registry
from jobs.errors import LimitError


class FakePredictor:
    """Records adapters by name (100 bytes each); answers with the folder each was loaded from."""

    def __init__(self, model, task):
        self.adapters: dict[str, str] = {}

    def add_untuned(self, name):
        self.adapters[name] = "untuned"

    def add_adapter(self, name, folder):
        assert name not in self.adapters, f"{name} loaded twice"
        self.adapters[name] = folder

    def remove_adapter(self, name):
        del self.adapters[name]

    def add_mix(self, name, names, weights):
        self.adapters[name] = "+".join(self.adapters[n] for n in names)

    def adapter_bytes(self, name):
        return 100

    def base_bytes(self):
        return 1000

    def predict(self, texts, names):
        return [{"text": self.adapters.get(n, "base")} for n in names]


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(registry, "adapter_folder", lambda i: f"folder-of-{i}")
    pool = model_pool.PredictorPool(ServeSettings(cache_mb=300 / 2**20))  # 3 adapters
    yield pool
    pool.close()


def _adapter(adapter_id, sha, base="m"):
    return {
        "id": adapter_id,
        "name": f"a{adapter_id}",
        "base_model": base,
        "task": "generate",
        "sha256": sha,
    }


def _loaded(pool, base="m") -> set[str]:
    return set(pool.served(base, "generate").predictor.adapters) - {model_pool.BASE_NAME}


def test_a_new_version_of_an_adapter_is_loaded_anew_and_the_old_one_dropped(pool):
    assert pool.compare("x", [_adapter(7, "aaaa")])["adapters"][0]["text"] == "folder-of-7"
    pool.compare("x", [_adapter(7, "bbbb")])
    assert _loaded(pool) == {"adapter7-bbbb"}


def test_forget_drops_every_copy_of_a_deleted_adapter_and_mixes_of_it(pool):
    mixed = pool.mix("x", [_adapter(7, "aaaa"), _adapter(8, "cccc")], [0.5, 0.5])
    assert mixed["text"] == "folder-of-7+folder-of-8"
    pool.compare("x", [_adapter(9, "dddd")])
    pool.forget(7)
    assert _loaded(pool) == {"adapter8-cccc", "adapter9-dddd"}


def test_adapters_stay_within_the_cache_bytes_least_recently_used_first(pool):
    for adapter_id in (1, 2, 3):
        pool.compare("x", [_adapter(adapter_id, "s")])
    pool.compare("x", [_adapter(1, "s")])  # 1 is used again: 2 is now the oldest
    pool.compare("x", [_adapter(4, "s")])
    assert _loaded(pool) == {"adapter1-s", "adapter3-s", "adapter4-s"}
    stats = pool.stats()["m (generate)"]
    assert stats["adapter_bytes"] == 300 and stats["adapters_loaded"] == 3


def test_a_batch_keeps_all_its_adapters_even_over_the_budget(pool):
    four = [_adapter(i, "s") for i in (1, 2, 3, 4)]
    result = pool.compare("x", four)
    assert [a["text"] for a in result["adapters"]] == [f"folder-of-{i}" for i in (1, 2, 3, 4)]
    assert len(_loaded(pool)) == 4  # evicted by the next batch that needs room


def test_each_base_has_its_own_cache_and_bases_past_the_count_are_dropped(monkeypatch):
    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(registry, "adapter_folder", lambda i: f"folder-of-{i}")
    pool = model_pool.PredictorPool(ServeSettings(max_bases=2))
    pool.compare("x", [_adapter(1, "s", base="m1")])
    pool.compare("x", [_adapter(2, "s", base="m2")])
    assert _loaded(pool, "m1") == {"adapter1-s"} and _loaded(pool, "m2") == {"adapter2-s"}
    first = pool.served("m1", "generate")
    pool.compare("x", [_adapter(3, "s", base="m3")])  # m2 is now the least recently used
    assert set(pool.stats()) == {"m1 (generate)", "m3 (generate)"}
    assert pool.served("m1", "generate") is first
    pool.close()


def test_bases_past_the_memory_budget_are_dropped_least_recently_used_first(monkeypatch):
    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(registry, "adapter_folder", lambda i: f"folder-of-{i}")
    pool = model_pool.PredictorPool(ServeSettings(max_bases=5, bases_mb=2500 / 2**20))
    for base in ("m1", "m2", "m3"):  # 1000 bytes each: two fit
        pool.compare("x", [_adapter(1, "s", base=base)])
    assert set(pool.stats()) == {"m2 (generate)", "m3 (generate)"}
    pool.close()


def test_a_person_at_their_in_flight_limit_is_refused_and_others_are_not():
    in_flight = serving.InFlight()
    with in_flight.admitted("ann", 2), in_flight.admitted("ann", 2):
        with pytest.raises(LimitError, match="Too many requests in flight.*=2\\)"):
            with in_flight.admitted("ann", 2):
                pass
        with in_flight.admitted("bob", 2):
            pass
    with in_flight.admitted("ann", 2):  # answers came back: room again
        pass
    assert in_flight._counts == {}


def test_deleting_an_adapter_drops_it_from_the_playground(monkeypatch):
    deleted, forgotten = [], []
    monkeypatch.setattr(access, "delete_adapter", lambda i, actor: deleted.append(i))
    monkeypatch.setattr(serving.POOL, "forget", forgotten.append)
    assert adapter_actions.delete_adapter(7) == 7
    assert deleted == [7] and forgotten == [7]


def test_serve_settings_come_from_the_environment_with_safe_defaults():
    assert ServeSettings.from_env({}) == ServeSettings()
    env = {
        "IA3_SERVE_MAX_BATCH_ROWS": "8",
        "IA3_SERVE_MAX_DELAY_MS": "0",
        "IA3_SERVE_CACHE_MB": "1.5",
    }
    settings = ServeSettings.from_env(env)
    assert (settings.max_batch_rows, settings.max_delay_ms) == (8, 0)
    assert settings.cache_bytes == 1.5 * 2**20
    with pytest.raises(ConfigError, match="IA3_SERVE_MAX_BATCH_ROWS='2.5'.*whole number"):
        ServeSettings.from_env({"IA3_SERVE_MAX_BATCH_ROWS": "2.5"})
    with pytest.raises(ConfigError, match="IA3_SERVE_CACHE_MB='-1'.*positive"):
        ServeSettings.from_env({"IA3_SERVE_CACHE_MB": "-1"})
    with pytest.raises(ConfigError, match="could never be queued"):
        ServeSettings.from_env({"IA3_SERVE_MAX_TEXTS": "10", "IA3_SERVE_MAX_QUEUED_ROWS": "5"})
