"""Scoring a data file with an adapter, or with the base alone: what `ia3 eval` runs.

Uses the adapter's own labels, template and prompt, so the score matches what serving returns.
"""

from __future__ import annotations

import logging

import torch

from ia3engine.data.dataset import prepare_dataset
from ia3engine.errors import DataError
from ia3engine.serve.adapter_info import read_training_info
from ia3engine.serve.predict import Predictor
from ia3engine.training.tasks import macro_f1

logger = logging.getLogger(__name__)

BATCH = 32


def evaluate_file(
    model: str,
    data: str,
    adapter: str | None = None,
    task: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    device=None,
) -> dict:
    """Accuracy and macro F1 (classify) or exact match (generate) over every row of `data`."""
    info = read_training_info(adapter) if adapter else {}
    task = task or info.get("task") or "classify"
    rows = prepare_dataset(
        data,
        eval_path=data,
        task=task,
        text_column=text_column or info.get("text_column"),
        label_column=label_column or info.get("label_column"),
    )
    if adapter:
        predictor = Predictor(model, task=task, device=device)
        predictor.add_adapter("adapter", adapter)
        name = "adapter"
    else:
        predictor = _untuned(model, task, rows, device)
        name = "untuned"
    if task == "generate":
        return _score_generate(predictor, rows.eval, name)
    return _score_classify(predictor, rows, name)


def _untuned(model, task, rows, device):
    """A Predictor on the bare base: the data's labels as choices, vectors at one."""
    predictor = Predictor(model, task=task, device=device)
    predictor.add_untuned(rows.labels)
    return predictor


def _score_classify(predictor, rows, name) -> dict:
    texts, truth_ids = list(rows.eval["text"]), list(rows.eval["label"])
    known = predictor.labels_of(name)
    missing = sorted({rows.labels[i] for i in truth_ids} - set(known))
    if missing:
        raise DataError(
            f"Labels {missing} in the data are unknown to the adapter (it knows {known}); "
            "score it on data with the labels it was trained on."
        )
    predicted = []
    for i in range(0, len(texts), BATCH):
        chunk = texts[i : i + BATCH]
        predicted += [r["label"] for r in predictor.predict(chunk, [name] * len(chunk))]
    truth = torch.tensor([known.index(rows.labels[i]) for i in truth_ids])
    guess = torch.tensor([known.index(label) for label in predicted])
    return {
        "accuracy": (guess == truth).float().mean().item(),
        "f1": macro_f1(guess, truth, len(known)),
        "rows": len(texts),
    }


def _score_generate(predictor, data, name) -> dict:
    prompts, responses = list(data["prompt"]), list(data["response"])
    hits = 0
    for i in range(0, len(prompts), BATCH):
        chunk = prompts[i : i + BATCH]
        outputs = predictor.predict(chunk, [name] * len(chunk))
        hits += sum(
            o["text"] == r.strip() for o, r in zip(outputs, responses[i : i + BATCH], strict=True)
        )
    return {"exact_match": hits / max(len(prompts), 1), "rows": len(prompts)}
