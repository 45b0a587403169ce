"""Base loading: kinds, clear errors, the calm load message, and the warm BaseCache."""

import logging

import pytest
import train_models as tm
from torch import nn

from ia3engine.config import IA3Config
from ia3engine.errors import ModelLoadError
from ia3engine.layers import IA3Layer
from ia3engine.model import get_ia3_model
from ia3engine.training.loading import BaseCache, load_base, resolve_model_path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    return {kind: tm.save_tiny(kind, root / kind) for kind in ("bert", "gpt2", "t5")}


@pytest.mark.parametrize(
    ("kind", "expected"), [("bert", "encoder"), ("gpt2", "causal"), ("t5", "seq2seq")]
)
def test_kind_is_detected_from_the_config(folders, kind, expected):
    loaded = load_base(folders[kind], num_labels=3, device="cpu")
    assert loaded.kind == expected
    if expected == "encoder":
        assert loaded.model.classifier.out_features == 3


def test_new_head_gets_one_calm_log_line_instead_of_a_report(minilm_path, caplog, capsys):
    with caplog.at_level(logging.INFO):
        load_base(minilm_path, num_labels=2, device="cpu")
    assert any("start from scratch" in r.getMessage() for r in caplog.records)
    assert "LOAD REPORT" not in capsys.readouterr().err
    assert not any("LOAD REPORT" in r.getMessage() for r in caplog.records)


def test_unknown_hub_id_says_what_to_check(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Check the id"):
        load_base("no-such-org/no-such-model-xyz", device="cpu")


def test_generate_on_an_encoder_is_refused(folders):
    with pytest.raises(ModelLoadError, match="cannot generate"):
        load_base(folders["bert"], task="generate", device="cpu")


def test_minilm_names_the_bundled_folder(minilm_path):
    assert resolve_model_path("minilm") == minilm_path


def test_cache_hands_back_a_clean_base_and_resizes_the_head(folders):
    cache = BaseCache()
    first = cache.get(folders["bert"], num_labels=2, device="cpu", labels=["a", "b"])
    get_ia3_model(first.model, IA3Config(task_type="SEQ_CLS"))
    second = cache.get(folders["bert"], num_labels=3, device="cpu", labels=["x", "y", "z"])
    assert second is first and cache.loads == 1
    assert not any(isinstance(m, IA3Layer) for m in second.model.modules())
    assert isinstance(second.model.classifier, nn.Linear)
    assert second.model.classifier.out_features == 3
    assert second.model.config.id2label == {0: "x", 1: "y", 2: "z"}
    cache.get(folders["gpt2"], device="cpu")
    assert cache.loads == 2
