"""The playground's pool: adapters loaded under their id and weights' hash, dropped on delete,
at most a few per base; a stand-in Predictor records what is loaded (no model needed)."""

from __future__ import annotations

import threading

import pytest
from waiting import wait_for

from app import adapter_actions, model_pool, serving
from ia3engine.serve import predict
from jobs import access, registry
from jobs.errors import LimitError


class FakePredictor:
    """Records adapters by name; answers with the folder each name was loaded from."""

    def __init__(self, model, task):
        self.adapters: dict[str, str] = {}

    def add_adapter(self, name, folder):
        assert name not in self.adapters, f"{name} loaded twice"
        self.adapters[name] = folder

    def remove_adapter(self, name):
        del self.adapters[name]

    def add_mix(self, name, names, weights):
        self.adapters[name] = "+".join(self.adapters[n] for n in names)

    def predict(self, texts, names):
        return [{"text": self.adapters[n] if n else "base"} for n in names]


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(registry, "adapter_folder", lambda i: f"folder-of-{i}")
    return model_pool.PredictorPool(max_adapters=3)


def _adapter(adapter_id, sha):
    return {
        "id": adapter_id,
        "name": f"a{adapter_id}",
        "base_model": "m",
        "task": "generate",
        "sha256": sha,
    }


def _loaded(pool) -> set[str]:
    return set(pool._predictors[("m", "generate")].adapters)


def test_an_adapter_with_a_reused_id_but_other_weights_is_loaded_anew(pool):
    pool.compare("x", [_adapter(7, "aaaa")])
    pool.compare("x", [_adapter(7, "bbbb")])
    assert _loaded(pool) == {"adapter7-aaaa", "adapter7-bbbb"}


def test_forget_drops_every_copy_of_a_deleted_adapter_and_mixes_of_it(pool):
    pool.mix("x", [_adapter(7, "aaaa"), _adapter(8, "cccc")], [0.5, 0.5])
    pool.compare("x", [_adapter(9, "dddd")])
    pool.forget(7)
    assert _loaded(pool) == {"adapter8-cccc", "adapter9-dddd"}
    assert pool._mixes == {}


def test_at_most_max_adapters_stay_loaded_on_a_base_least_recently_used_first(pool):
    for adapter_id in (1, 2, 3):
        pool.compare("x", [_adapter(adapter_id, "s")])
    pool.compare("x", [_adapter(1, "s")])  # 1 is used again: 2 is now the oldest
    pool.compare("x", [_adapter(4, "s")])
    assert _loaded(pool) == {"adapter1-s", "adapter3-s", "adapter4-s"}


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


def test_turns_go_round_robin_so_a_later_person_is_not_starved():
    turns, order, release = serving.Turns(), [], threading.Event()

    def request(who, label, hold=None):
        with turns.turn(who):
            order.append(label)
            if hold is not None:
                hold.wait(30)

    def waiting(count):
        wait_for(
            lambda: order and sum(len(t) for t in turns._waiting.values()) >= count,
            30,
            f"{count} requests waiting for a turn",
            poll_s=0.01,
        )

    threads = [threading.Thread(target=request, args=("ann", "ann-1", release))]
    threads[0].start()
    waiting(0)  # ann-1 holds the turn
    for who, label, queued in (("ann", "ann-2", 1), ("ann", "ann-3", 2), ("bob", "bob-1", 3)):
        threads.append(threading.Thread(target=request, args=(who, label)))
        threads[-1].start()
        waiting(queued)
    release.set()
    for thread in threads:
        thread.join(30)
    # bob came last but goes before ann's third request: one turn per person in line.
    assert order == ["ann-1", "ann-2", "bob-1", "ann-3"]


def test_deleting_an_adapter_drops_it_from_the_playground(monkeypatch):
    deleted, forgotten = [], []
    monkeypatch.setattr(access, "delete_adapter", lambda i, actor: deleted.append(i))
    monkeypatch.setattr(serving.POOL, "forget", forgotten.append)
    assert adapter_actions.delete_adapter(7) == 7
    assert deleted == [7] and forgotten == [7]
