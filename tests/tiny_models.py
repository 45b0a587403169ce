"""Tiny random models built from configs, so tests never touch the network.

Each builder returns a freshly initialised model with a fixed seed; sizes are small
enough that a forward pass takes milliseconds on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    RobertaConfig,
    T5Config,
)

VOCAB = 128


def _seeded(build):
    def wrapper(*args, seed: int = 0, **kwargs):
        torch.manual_seed(seed)
        model = build(*args, **kwargs)
        return model.eval()

    wrapper.__name__ = build.__name__
    wrapper.__doc__ = build.__doc__
    return wrapper


# name -> (config class, the auto class that builds it, the tiny sizes)
ARCHITECTURES = {
    "bert": (
        BertConfig,
        AutoModelForSequenceClassification,
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
    ),
    "roberta": (
        RobertaConfig,
        AutoModelForSequenceClassification,
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=70,
            pad_token_id=1,
        ),
    ),
    "gpt2": (
        GPT2Config,
        AutoModelForCausalLM,
        dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    ),
    "llama": (
        LlamaConfig,
        AutoModelForCausalLM,
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        ),
    ),
    "t5": (
        T5Config,
        AutoModelForSeq2SeqLM,
        dict(
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
    ),
    "opt": (
        OPTConfig,
        AutoModelForCausalLM,
        dict(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
        ),
    ),
}


def build(name: str, **overrides):
    """A freshly initialised tiny model of architecture `name`; overrides change its config."""
    config_class, auto_class, sizes = ARCHITECTURES[name]
    config = config_class(**{"vocab_size": VOCAB, **sizes, **overrides})
    return auto_class.from_config(config)


@_seeded
def bert(num_labels: int = 2):
    """BERT sequence classifier: key/value/output.dense targets, `classifier` head."""
    return build("bert", num_labels=num_labels)


@_seeded
def roberta(num_labels: int = 2):
    """RoBERTa sequence classifier (same target names as BERT)."""
    return build("roberta", num_labels=num_labels)


@_seeded
def gpt2():
    """GPT-2 causal LM: transformers Conv1D layers (weight is (in, out))."""
    return build("gpt2")


@_seeded
def llama():
    """Llama causal LM: k_proj/v_proj/down_proj, gated MLP."""
    return build("llama")


@_seeded
def t5():
    """T5 v1.0 seq2seq (k, v, wo) with relative attention and a single `wi`."""
    return build("t5")


@_seeded
def opt():
    """OPT causal LM: q_proj/k_proj/fc2."""
    return build("opt")


class ConvNet(nn.Module):
    """A small image classifier with Conv2d, a grouped Conv2d, Conv3d and Linear."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv3d = nn.Conv3d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.lin0 = nn.Linear(8 + 4, 16)
        self.lin1 = nn.Linear(16, 2)

    def forward(self, x, volume):  # x (B, 3, H, W), volume (B, 1, D, H, W)
        h = self.relu(self.conv1(self.relu(self.conv0(x)))).mean(dim=(2, 3))  # (B, 8)
        v = self.relu(self.conv3d(volume)).mean(dim=(2, 3, 4))  # (B, 4)
        return self.lin1(self.relu(self.lin0(torch.cat([h, v], dim=-1))))


@_seeded
def convnet():
    return ConvNet()


class MLP(nn.Module):
    """PEFT's test MLP: lin0 10->20, lin1 20->2."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.lin0 = nn.Linear(10, 20, bias=bias)
        self.relu = nn.ReLU()
        self.lin1 = nn.Linear(20, 2, bias=bias)

    def forward(self, x):
        return self.lin1(self.relu(self.lin0(x)))


@_seeded
def mlp(bias: bool = True):
    return MLP(bias=bias)


TRANSFORMERS = {
    "bert": bert,
    "roberta": roberta,
    "gpt2": gpt2,
    "llama": llama,
    "t5": t5,
    "opt": opt,
}


def token_batch(model_name: str, batch: int = 3, length: int = 8, seed: int = 0) -> dict:
    """Random token ids (and decoder ids for T5) for a forward pass."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model_name == "t5":
        inputs["decoder_input_ids"] = torch.randint(2, VOCAB, (batch, 5), generator=gen)
    return inputs
