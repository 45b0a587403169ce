"""Identity, attacked through a running studio: ids are never handed out twice, and the
playground never answers for one adapter with another's vectors or labels.

ann imports adapter X (labels down/up), plays with it (the playground keeps it loaded),
deletes it and imports Y (labels cold/warm); SQLite would give Y the id X had.
"""

from __future__ import annotations

import pytest
from adapter_builds import adapter_zip
from attack_support import refused, running_studio
from gradio_client import handle_file
from train_models import train_adapter


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity-studio")
    first = adapter_zip(train_adapter(tmp / "x" / "first"), tmp / "first.zip")
    second = adapter_zip(train_adapter(tmp / "y" / "second", ("cold", "warm")), tmp / "second.zip")
    with running_studio(tmp, workers=0) as attacked:
        yield {
            "ann": attacked.client("ann"),
            "bob": attacked.client("bob"),
            "first": first,
            "second": second,
            "studio": attacked,
        }


def _import(client, path, name: str) -> int:
    return client.predict(handle_file(str(path)), "minilm", name, api_name="/import_adapter")


def _labels(client, adapter_id: int) -> set[str]:
    result = client.predict("a good film", [adapter_id], False, api_name="/predict")
    return set(result["adapters"][0]["probs"])


def test_a_new_adapter_never_takes_a_deleted_ones_id_or_its_loaded_vectors(studio):
    ann = studio["ann"]
    first = _import(ann, studio["first"], "first")
    assert _labels(ann, first) == {"down", "up"}  # now loaded in the playground
    ann.predict(first, api_name="/delete_adapter")
    second = _import(ann, studio["second"], "second")
    assert second != first
    assert _labels(ann, second) == {"cold", "warm"}
    assert f"No adapter #{first} among yours" in refused(
        ann, "a good film", [first], False, api_name="/predict"
    )


def test_bob_never_inherits_the_id_of_anns_deleted_adapter(studio):
    ann, bob = studio["ann"], studio["bob"]
    anns = _import(ann, studio["first"], "ann's newest")
    ann.predict(anns, api_name="/delete_adapter")
    bobs = _import(bob, studio["second"], "bob's")
    # An id ann held (in a bookmark, a share link, a log) never names bob's adapter.
    assert bobs > anns
    assert f"No adapter #{anns} among yours" in refused(ann, anns, api_name="/adapter_info")
