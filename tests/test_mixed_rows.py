"""Mixed-adapter batches route only batch-major tensors: DeBERTa's shared relative-position
projections are computed per adapter, anything else whose leading dimension is not the batch
is refused with an error naming the layer, and DataParallel/DDP work or refuse plainly."""

import copy

import pytest
import torch
from tiny_models import VOCAB, llama, opt, token_batch
from torch import nn
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    BertConfig,
    DebertaConfig,
    DebertaV2Config,
)

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError
from ia3engine.model import get_ia3_model
from ia3engine.routing import BASE

DEBERTA_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    relative_attention=True,
    pos_att_type=["p2c", "c2p"],
)


def _deberta_v2(share_att_key: bool):
    torch.manual_seed(0)
    config = DebertaV2Config(
        **DEBERTA_SIZES,
        share_att_key=share_att_key,
        position_buckets=8,
        norm_rel_ebd="layer_norm",
    )
    return AutoModelForSequenceClassification.from_config(config).eval()


def _deberta_v1():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(DebertaConfig(**DEBERTA_SIZES)).eval()


def _logits(model, batch, **kwargs):
    with torch.no_grad():
        out = model(**batch, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _per_row(model, batch, rows):
    """Each row run alone with its own adapter (the base for BASE): the definition of right."""
    outputs = []
    for row, name in enumerate(rows):
        single = {k: v[row : row + 1] for k, v in batch.items()}
        if name == BASE:
            with model.disable_adapters():
                outputs.append(_logits(model, single))
        else:
            model.set_adapter(name)
            outputs.append(_logits(model, single))
    return torch.cat(outputs)


def _two_random_adapters(base, **config):
    model = get_ia3_model(base, IA3Config(init_ia3_weights=False, **config))
    model.add_adapter("b", IA3Config(init_ia3_weights=False, **config))
    return model


# DeBERTa: relative positions projected once, shared by every row ---------------------------
DEBERTA_CASES = {
    # v3's layout: key_proj/query_proj project the relative embeddings too
    "v2-shared-key": (
        lambda: _deberta_v2(share_att_key=True),
        ["query_proj", "key_proj", "value_proj", "output.dense"],
    ),
    # separate position projections, targeted by name
    "v2-pos-proj": (
        lambda: _deberta_v2(share_att_key=False),
        ["query_proj", "key_proj", "pos_key_proj", "pos_query_proj"],
    ),
    "v1": (_deberta_v1, ["in_proj", "pos_proj", "pos_q_proj", "output.dense"]),
}


@pytest.mark.parametrize("case", sorted(DEBERTA_CASES))
def test_deberta_mixed_batch_equals_each_row_run_with_its_own_adapter(case):
    build, targets = DEBERTA_CASES[case]
    model = _two_random_adapters(build(), target_modules=targets, feedforward_modules=[])
    rows = ["default", "b", BASE, "b", "default"]
    batch = token_batch("bert", batch=len(rows), length=7)
    mixed = _logits(model, batch, adapter_names=rows)
    torch.testing.assert_close(mixed, _per_row(model, batch, rows), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], mixed[1])  # the adapters really differ


def test_deberta_mixed_batch_trains_each_adapter_from_its_own_rows():
    model = _two_random_adapters(_deberta_v2(share_att_key=True), task_type="SEQ_CLS")
    model.train()
    key = model.base_model.deberta.encoder.layer[0].attention.self.key_proj
    key.ia3_l["b"].requires_grad_(True)
    batch = token_batch("bert", batch=3, length=6)
    model(**batch, adapter_names=["default", "b", "default"]).logits.sum().backward()
    assert key.ia3_l["b"].grad is not None and key.ia3_l["b"].grad.abs().sum() > 0
    assert key.ia3_l["default"].grad is not None  # rows 0 and 2, and their positional keys


def test_deberta_keeps_its_names_and_unload_gives_its_own_forward_back():
    base = _deberta_v2(share_att_key=True)
    attention_class = type(base.deberta.encoder.layer[0].attention.self)
    batch = token_batch("bert", batch=2, length=6)
    before = _logits(base, batch)
    model = _two_random_adapters(base)
    keys = model.state_dict().keys()
    assert "base_model.deberta.encoder.layer.0.attention.self.key_proj.ia3_l.b" in keys
    copied = copy.deepcopy(model)  # a deep copy routes its own rows
    rows = ["b", "default"]
    torch.testing.assert_close(
        _logits(copied, batch, adapter_names=rows), _logits(model, batch, adapter_names=rows)
    )
    bare = model.unload()
    assert type(bare.deberta.encoder.layer[0].attention.self) is attention_class
    torch.testing.assert_close(_logits(bare, batch), before)


# Tensors shared by every row elsewhere ----------------------------------------------------
class SharedTable(nn.Module):
    """Projects one learned table (leading dimension 1) for the whole batch, like DeBERTa."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(1, 4, 6))
        self.proj = nn.Linear(6, 6)
        self.lin = nn.Linear(6, 6)

    def forward(self, x):  # x (B, 4, 6)
        return self.lin(x) + self.proj(self.table)


def _shared_table_model():
    torch.manual_seed(0)
    model = get_ia3_model(SharedTable(), IA3Config(target_modules=["proj", "lin"]))
    model.add_adapter("only_lin", IA3Config(target_modules=["lin"], init_ia3_weights=False))
    with torch.no_grad():
        model.base_model.proj.ia3_l["default"].mul_(2.0)
    return model


def test_a_shared_tensor_the_batchs_adapters_scale_differently_raises_naming_the_layer():
    model = _shared_table_model()
    x = torch.randn(2, 4, 6)
    with pytest.raises(AdapterError, match=r"IA3 layer 'proj'.*shared by all 2 rows"):
        model(x, adapter_names=["default", "only_lin"])


def test_a_shared_tensor_every_adapter_in_the_batch_scales_alike_is_exact():
    model = _shared_table_model()
    x = torch.randn(3, 4, 6)
    rows = ["only_lin", BASE, "only_lin"]  # neither scales proj
    mixed = _logits(model, {"x": x}, adapter_names=rows)
    torch.testing.assert_close(mixed, _per_row(model, {"x": x}, rows))


# Leading dimensions that are not the batch ------------------------------------------------
class SequenceFirst(nn.Module):
    """Runs its layer on (length, batch, features), as some older models do inside."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):  # x (B, L, 6)
        return self.lin(x.transpose(0, 1)).transpose(0, 1)


def test_a_sequence_first_layer_is_refused_not_misrouted_when_the_length_divides():
    torch.manual_seed(0)
    model = _two_random_adapters(SequenceFirst(), target_modules=["lin"])
    x = torch.randn(2, 4, 6)  # length 4 = 2 * batch: yesterday routed as if beams, silently
    with pytest.raises(AdapterError, match=r"IA3 layer 'lin' \(Linear\) got a tensor with 4 rows"):
        model(x, adapter_names=["default", "b"])


@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_transformer_layers_route_only_when_batch_first(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first).eval()
    model = _two_random_adapters(layer, target_modules=["linear1", "linear2"])
    x = torch.randn(2, 2, 8)  # length == batch: no shape can tell the layouts apart
    rows = ["default", "b"]
    if not batch_first:
        with pytest.raises(AdapterError, match="batch_first=False"):
            model(x, adapter_names=rows)
        return
    mixed = _logits(model, {"src": x}, adapter_names=rows)
    torch.testing.assert_close(mixed, _per_row(model, {"src": x}, rows), atol=1e-6, rtol=1e-5)


def test_adapter_names_that_do_not_match_the_batch_are_refused_before_the_forward():
    model = _two_random_adapters(llama())
    batch = token_batch("llama", batch=4)
    with pytest.raises(AdapterError, match=r"3 entries but the batch \(input_ids\) has 4 rows"):
        model(**batch, adapter_names=["default", "b", "default"])


def test_multiple_choice_rows_expand_per_choice():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    model = _two_random_adapters(AutoModelForMultipleChoice.from_config(config).eval())
    ids = torch.randint(2, VOCAB, (3, 2, 6))  # (batch, choices, length) -> 6 rows inside
    rows = ["b", "default", "b"]
    mixed = _logits(model, {"input_ids": ids}, adapter_names=rows)
    torch.testing.assert_close(mixed, _per_row(model, {"input_ids": ids}, rows))


def test_tokens_flattened_batch_major_route_per_row():
    model = _two_random_adapters(opt())  # OPT's fc1/fc2 see (batch * length, hidden)
    batch = token_batch("opt", batch=3, length=5)
    rows = ["b", "default", BASE]
    mixed = _logits(model, batch, adapter_names=rows)
    torch.testing.assert_close(mixed, _per_row(model, batch, rows), atol=1e-5, rtol=1e-5)


# generate: beams and returned sequences are the one expansion a decoder sees --------------
@pytest.mark.parametrize("build", [llama, opt], ids=["llama", "opt"])
def test_mixed_generate_with_beams_matches_each_prompt_alone(build):
    model = _two_random_adapters(build())
    batch = token_batch("llama", batch=2, length=5)
    kwargs = dict(max_new_tokens=4, num_beams=2, num_return_sequences=2, pad_token_id=0)
    with torch.no_grad():
        mixed = model.generate(**batch, adapter_names=["b", "default"], do_sample=False, **kwargs)
        for row, name in enumerate(["b", "default"]):
            model.set_adapter(name)
            alone = model.generate(
                **{k: v[row : row + 1] for k, v in batch.items()}, do_sample=False, **kwargs
            )
            assert torch.equal(mixed[2 * row : 2 * row + 2], alone)


# DataParallel and DistributedDataParallel --------------------------------------------------
def test_a_dataparallel_replica_with_a_slice_of_the_batch_is_refused_with_the_fix():
    model = _two_random_adapters(llama())
    batch = token_batch("llama", batch=4)
    # what torch.nn.DataParallel does on 2 GPUs: each replica gets half the rows but, as
    # scatter copies lists of strings whole, every adapter name
    replica = model._replicate_for_data_parallel()
    half = {k: v[:2] for k, v in batch.items()}
    with pytest.raises(AdapterError, match="DataParallel.*DistributedDataParallel"):
        replica(**half, adapter_names=["default", "b", "b", "default"])
    rows = ["default", "b", "b", "default"]  # with no GPU, DataParallel just calls the model
    parallel = nn.DataParallel(model)
    torch.testing.assert_close(
        _logits(parallel, batch, adapter_names=rows), _logits(model, batch, adapter_names=rows)
    )


def test_distributed_data_parallel_routes_each_process_own_rows(tmp_path):
    distributed = torch.distributed
    if not distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    model = _two_random_adapters(llama())
    batch = token_batch("llama", batch=3)
    rows = ["b", "default", BASE]
    expected = _logits(model, batch, adapter_names=rows)
    distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        torch.testing.assert_close(_logits(wrapped, batch, adapter_names=rows), expected)
    finally:
        distributed.destroy_process_group()
