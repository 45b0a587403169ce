"""The few-shot head start: deepest key vectors, leave-one-out separation, uniform [CLS] (for
encoders not pooled by [CLS])."""

import json
from pathlib import Path

import pytest
import torch
import train_models as tm
from safetensors.torch import load_file

import ia3engine.training.head as head_start
from ia3engine import IA3Config, TrainSpec, get_ia3_model, train
from ia3engine.training.head import last_layer_keys


def _tiny_bert_classifier():
    torch.manual_seed(0)
    model = tm._model("bert", dropout=0.0).eval()
    model.set_attn_implementation("eager")  # only eager attention returns its weights
    return get_ia3_model(model, IA3Config(task_type="SEQ_CLS"))


def test_last_layer_keys_are_only_the_deepest_key_vectors():
    model = _tiny_bert_classifier()
    keys = last_layer_keys(model)
    deepest = max(
        int(n.split(".layer.")[1].split(".")[0])
        for n, _ in model.named_parameters()
        if ".layer." in n
    )
    named = {id(p): n for n, p in model.named_parameters()}
    assert keys, "a BERT with several layers has a deepest key vector"
    for vector in keys:
        name = named[id(vector)]
        assert f".layer.{deepest}." in name and ".key." in name and "ia3_l" in name


def test_zero_deepest_keys_make_last_layer_attention_uniform():
    model = _tiny_bert_classifier()
    batch = {
        "input_ids": torch.tensor([[2, 5, 6, 7, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]]),
    }
    with torch.no_grad():
        for vector in last_layer_keys(model):
            vector.zero_()
        attentions = model(**batch, output_attentions=True).attentions
    last = attentions[-1][0]  # (heads, query, key)
    expected = torch.tensor([0.2] * 5 + [0.0])
    assert torch.allclose(last[:, 0, :], expected.expand_as(last[:, 0, :]), atol=1e-6)
    assert not torch.allclose(attentions[0][0][:, 0, :], expected.expand_as(last[:, 0, :]))


def test_uniform_cls_attention_zeroes_only_the_deepest_keys():
    model = _tiny_bert_classifier()
    assert head_start.uniform_cls_attention(model)
    deepest = {id(v) for v in last_layer_keys(model)}
    for name, param in model.named_parameters():
        if "ia3_l" in name:
            assert torch.all(param == 0) == (id(param) in deepest), name


def test_fit_scale_stays_modest_when_left_out_rows_do_not_follow_the_labels():
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * 10)
    noise = torch.randn(20, 8, generator=gen)  # labels carry no signal: each row is its own
    separated = torch.randn(20, 8, generator=gen) * 0.1 + y.unsqueeze(1) * 3.0
    assert head_start.fit_scale(noise, y) < head_start.fit_scale(separated, y)
    distance, _, truth = head_start.leave_one_out_distances(separated, y)
    probs = torch.softmax(-0.5 * head_start.fit_scale(separated, y) * distance, dim=1)
    assert probs.gather(1, truth.unsqueeze(1)).min() > 0.99  # confident where it can be
    distance, _, truth = head_start.leave_one_out_distances(noise, y)
    probs = torch.softmax(-0.5 * head_start.fit_scale(noise, y) * distance, dim=1)
    assert probs.max() < 0.9  # and unsure where left-out rows say it should be


@pytest.mark.parametrize(
    ("pooling_key", "deepest_key"),
    [("pooling_mode_cls_token", 1.0), ("pooling_mode_mean_tokens", 0.0)],
)
def test_the_encoders_own_pooling_decides_whether_cls_is_averaged(
    tmp_path, pooling_key, deepest_key
):
    """A sentence encoder pooled by [CLS] trained [CLS] to summarise: its deepest key is kept;
    one pooled by the mean gets [CLS] as the mean (the key at zero). One step at a tiny rate
    leaves the start on disk."""
    base = Path(tm.save_tiny("bert", tmp_path / "bert"))
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text(json.dumps({pooling_key: True}))
    spec = TrainSpec(
        model=str(base),
        data=tm.write_sentiment(tmp_path / "train.csv", 16),
        steps=1,
        lr=1e-7,
        batch_size=8,
        max_length=16,
        device="cpu",
        out_dir=str(tmp_path / "out"),
    )
    train(spec)
    vectors = load_file(tmp_path / "out" / "adapter_model.safetensors")
    deepest = [v for k, v in vectors.items() if ".layer.1.attention.self.key." in k]
    shallow = [v for k, v in vectors.items() if ".layer.0.attention.self.key." in k]
    assert deepest and shallow
    assert all(torch.allclose(v, torch.full_like(v, deepest_key), atol=1e-3) for v in deepest)
    assert all(torch.allclose(v, torch.ones_like(v), atol=1e-3) for v in shallow)
