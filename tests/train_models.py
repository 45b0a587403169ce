"""Tiny saved models with a word-level tokenizer, and tiny datasets, for the training tests.

Training needs a folder with a config, weights and a tokenizer: save_tiny() is the one builder
of such folders for every suite (engine, jobs, app); it runs offline in milliseconds. The
sentiment rows are learnable: the label follows the adjective.
"""

from __future__ import annotations

import csv
import json
import random
import re
import time
from pathlib import Path

import torch
from tiny_models import build
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ia3engine import TrainSpec
from ia3engine.training.run import train

SPECIAL = ["<pad>", "</s>", "<unk>", "<s>", "[CLS]", "[SEP]"]
GOOD = ["good", "great", "fine", "nice", "lovely"]
BAD = ["bad", "awful", "poor", "sad", "dull"]
NOUNS = ["movie", "food", "phone", "book", "hotel"]
OTHER = ["the", "was", "is", "very", "quite", "really", "positive", "negative", "Options"]
OTHER += ["Answer", "Say", "it", "again", ":", ".", ","]
WORDS = SPECIAL + GOOD + BAD + NOUNS + OTHER
# Wider than transformers' 0.02, so that a random tiny model tells words apart and IA3 can
# learn something in a few steps.
INIT_RANGE = 0.3


def tokenizer(kind: str) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)]
        )
    elif kind == "t5":
        core.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", 1)]
        )
    extra = {"cls_token": "[CLS]", "sep_token": "[SEP]"} if kind == "bert" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        **extra,
    )


def _model(kind: str, dropout: float, hidden: int = 32):
    common = {"vocab_size": len(WORDS), "initializer_range": INIT_RANGE}
    if kind == "bert":
        return build(
            "bert",
            **common,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            max_position_embeddings=128,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=0,
        )
    if kind == "gpt2":
        drop = {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
        return build("gpt2", **common, n_positions=128, bos_token_id=3, eos_token_id=1, **drop)
    if kind == "llama":
        ids = {"pad_token_id": 0, "bos_token_id": 3, "eos_token_id": 1}
        return build("llama", **common, max_position_embeddings=128, **ids)
    common.pop("initializer_range")  # T5 scales its init by a factor instead
    return build("t5", **common, dropout_rate=dropout, initializer_factor=INIT_RANGE * 20)


def save_tiny(kind: str, folder: Path, dropout: float = 0.1, hidden: int = 32) -> str:
    """A saved tiny model (bert, gpt2, llama or t5) with its tokenizer; returns the folder.

    `hidden` sizes BERT only (bitsandbytes' 4-bit blocks need 64 input features or more).
    """
    torch.manual_seed(0)
    folder = Path(folder)
    _model(kind, dropout, hidden).save_pretrained(folder)
    tokenizer(kind).save_pretrained(folder)
    return str(folder)


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        adjective = rng.choice(GOOD if positive else BAD)
        text = f"the {rng.choice(NOUNS)} was {rng.choice(['very', 'quite', 'really'])} {adjective}"
        rows.append((text, "positive" if positive else "negative"))
    return rows


def write_sentiment(path: Path, n: int = 48, seed: int = 0) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(n, seed))
    return str(path)


def write_instructions(path: Path, n: int = 24) -> str:
    with open(path, "w") as handle:
        for text, _ in sentiment_rows(n):
            handle.write(json.dumps({"prompt": f"Say it again : {text}", "response": text}) + "\n")
    return str(path)


def paced_train(spec, on_event, *, pause_s: float = 0.05, **kwargs):
    """Real training, paused `pause_s` after each step, so a kill, a stop or a time limit
    lands mid-run on any CPU (a Worker's train_fn)."""

    def paced(event):
        on_event(event)
        if event["type"] == "step":
            time.sleep(pause_s)

    return train(spec, on_event=paced, **kwargs)


def train_adapter(folder: Path, labels: tuple[str, str] = ("down", "up")) -> Path:
    """A one-step MiniLM classifier adapter answering with `labels`, written to `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    data = folder.parent / f"{folder.name}.csv"
    rows = [f"the film was {'good' if i % 2 else 'bad'} {i},{labels[i % 2]}" for i in range(20)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    spec = TrainSpec(
        model="minilm",
        data=str(data),
        steps=1,
        batch_size=4,
        eval_every=0,
        val_fraction=0.1,  # metrics for the card: on 20 rows the default would hold none back
        max_length=32,
        out_dir=str(folder),
        name=folder.name,
    )
    train(spec)
    return folder


def tiny_classifier(root: Path) -> tuple[str, Path]:
    """A tiny random BERT base in `root` and a 2-step sentiment adapter trained on it:
    (the base's folder, the adapter's folder)."""
    base = save_tiny("bert", root / "bert")
    folder = root / "adapter"
    spec = TrainSpec(
        model=base,
        data=write_sentiment(root / "train.csv", 32),
        out_dir=str(folder),
        steps=2,
        batch_size=8,
        eval_every=0,
        device="cpu",
    )
    train(spec)
    return base, folder


def tiny_adapters(root: Path, runs) -> dict:
    """Tiny random BERT and GPT-2 bases in `root` ("bert", "gpt2") and an adapter per run
    (name, base, data, task), each trained for 3 steps with its own seed. `data` is
    "sentiment", "flipped" (its labels swapped) or a file. Returns {name: folder} with the bases."""
    found = {"bert": save_tiny("bert", root / "bert"), "gpt2": save_tiny("gpt2", root / "gpt2")}
    sentiment = write_sentiment(root / "train.csv", 32)
    flipped = root / "flipped.csv"
    swapped = {"positive": "negative", "negative": "positive"}
    flipped.write_text(
        re.sub("positive|negative", lambda m: swapped[m.group(0)], Path(sentiment).read_text())
    )
    sources = {"sentiment": sentiment, "flipped": str(flipped)}
    common = dict(steps=3, lr=0.2, head_lr=0.2, batch_size=8, eval_every=0, device="cpu")
    for name, base, data, task in runs:
        folder = root / name
        spec = TrainSpec(
            model=found[base],
            data=sources.get(data, data),
            task=task,
            out_dir=str(folder),
            seed=ord(name),
            **common,
        )
        train(spec)
        found[name] = folder
    return found
