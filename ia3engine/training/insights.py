"""Validation insights: what a model got right and wrong on the validation rows.

Measured by train() on the validation split it already uses, once with the weights before
step 1 ("before") and once with the final adapter ("after"). The result is plain JSON:

    {"version": 1, "task": "classify" | "generate", "labels": [...], "rows": n looked at,
     "rows_total": validation rows, "before": side, "after": side,
     "metrics_before": the run's step-0 evaluation, "metrics": its final evaluation}

A classification side: accuracy, per_class [{label, precision, recall, f1, support}],
confusion (rows: true label, columns: predicted, counts) over confusion_labels (every label, or
the MAX_MATRIX_LABELS that occur most), wrong rows (most confident mistakes first, capped, with
the MAX_PROBS most probable labels' probabilities) and wrong_total. A generation side:
exact_match and rows [{prompt, reference, generated, exact_match}]. The work is bounded: MAX_CLASSIFY_ROWS rows are scored,
MAX_GENERATE_ROWS generated with at most GENERATE_NEW_TOKENS new tokens each.
"""

from __future__ import annotations

from collections import Counter

import torch

SCHEMA_VERSION = 1
MAX_CLASSIFY_ROWS = 2000  # validation rows scored for the confusion matrix and the tables
MAX_WRONG_ROWS = 200  # mistakes kept, most confident first
MAX_PROBS = 10  # probabilities kept per wrong row: every label, or the most probable ones
MAX_MATRIX_LABELS = 50  # the confusion matrix holds the labels that occur most, past this
MAX_GENERATE_ROWS = 50  # prompts generated for the side-by-side table
GENERATE_NEW_TOKENS = 32  # new tokens at most per generated row (greedy)
TEXT_CHARS = 300  # texts, prompts and generations are cut to this many characters

NO_ROWS = (
    "No validation rows to look at: give an eval file with rows, or more training rows so the "
    "validation share holds some, to see which rows the adapter gets wrong."
)
STOPPED = "The run was stopped before its final evaluation."


def cut(text, limit: int = TEXT_CHARS) -> str:
    """`text` as a string of at most `limit` characters (an ellipsis marks a cut)."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Classification: the arithmetic on predictions ----------------------------------------------


def matrix_labels(predicted: list[int], truth: list[int], num_labels: int) -> list[int]:
    """The label ids the confusion matrix holds: all of them, or the MAX_MATRIX_LABELS that
    occur most often (as truth or prediction), in label order."""
    if num_labels <= MAX_MATRIX_LABELS:
        return list(range(num_labels))
    weight = Counter(truth) + Counter(predicted)
    return sorted(sorted(range(num_labels), key=lambda c: -weight[c])[:MAX_MATRIX_LABELS])


def confusion(predicted: list[int], truth: list[int], keep: list[int]) -> list[list[int]]:
    """Counts over the labels `keep`: row = true label, column = predicted label."""
    index = {c: i for i, c in enumerate(keep)}
    counts = [[0] * len(keep) for _ in keep]
    for p, t in zip(predicted, truth, strict=True):
        if p in index and t in index:
            counts[index[t]][index[p]] += 1
    return counts


def per_class(predicted: list[int], truth: list[int], labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per label (0 where a ratio has nothing to divide by,
    as scikit-learn's zero_division=0)."""
    support, guessed = Counter(truth), Counter(predicted)
    hits = Counter(t for p, t in zip(predicted, truth, strict=True) if p == t)
    rows = []
    for c, label in enumerate(labels):
        precision = hits[c] / guessed[c] if guessed[c] else 0.0
        recall = hits[c] / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "label": label,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support[c],
            }
        )
    return rows


def _probs(row: list[float], labels: list[str]) -> dict:
    """label -> probability (4 decimals): every label, or the MAX_PROBS most probable."""
    ranked = sorted(range(len(row)), key=lambda c: -row[c])[:MAX_PROBS]
    return {labels[c]: round(float(row[c]), 4) for c in sorted(ranked)}


def wrong_rows(texts, truth, probs, labels, limit: int = MAX_WRONG_ROWS) -> list[dict]:
    """The rows whose most probable label is not the true one, most confident first."""
    found = []
    for text, t, row in zip(texts, truth, probs, strict=True):
        guess = max(range(len(row)), key=row.__getitem__)
        if guess != t:
            found.append((float(row[guess]), text, t, guess, row))
    found.sort(key=lambda item: -item[0])
    return [
        {
            "text": cut(text),
            "true": labels[t],
            "predicted": labels[guess],
            "confidence": round(confidence, 4),
            "probs": _probs(row, labels),
        }
        for confidence, text, t, guess, row in found[:limit]
    ]


def classify_side(texts, truth, probs, labels) -> dict:
    """One side (before or after) of a classifier's insights from its class probabilities
    (a list of per-row lists, or a tensor)."""
    probs = probs.tolist() if torch.is_tensor(probs) else [list(r) for r in probs]
    truth = [int(t) for t in truth]
    predicted = [max(range(len(r)), key=r.__getitem__) for r in probs]
    keep = matrix_labels(predicted, truth, len(labels))
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    return {
        "accuracy": right / len(predicted) if predicted else 0.0,
        "per_class": per_class(predicted, truth, labels),
        "confusion": confusion(predicted, truth, keep),
        "confusion_labels": [labels[c] for c in keep],
        "wrong": wrong_rows(texts, truth, probs, labels),
        "wrong_total": len(predicted) - right,
    }


# Generation ------------------------------------------------------------------------------


def exact(generated: str, reference: str) -> bool:
    """The exact-match rule of evaluation: the same text once outer spaces are stripped."""
    return str(generated).strip() == str(reference).strip()


def generate_side(prompts, references, generated) -> dict:
    """One side of a generator's insights: each prompt with its reference and generation."""
    rows = [
        {
            "prompt": cut(p),
            "reference": cut(r),
            "generated": cut(g),
            "exact_match": exact(g, r),
        }
        for p, r, g in zip(prompts, references, generated, strict=True)
    ]
    hits = sum(row["exact_match"] for row in rows)
    return {"exact_match": hits / len(rows) if rows else 0.0, "rows": rows}


# Running the model -----------------------------------------------------------------------


@torch.no_grad()
def measure(task, model, data, batch_size: int) -> dict | None:
    """One side of the insights for `model` (in eval mode) on the first rows of `data`."""
    if len(data) == 0:
        return None
    if task.task == "generate":
        count = min(len(data), MAX_GENERATE_ROWS)
        rows = data.select(range(count))
        prompts, refs = list(rows["prompt"]), list(rows["response"])
        made = []
        for i in range(0, count, batch_size):
            made += task.generate(
                model, prompts[i : i + batch_size], max_new_tokens=GENERATE_NEW_TOKENS
            )
        return generate_side(prompts, refs, made)
    count = min(len(data), MAX_CLASSIFY_ROWS)
    rows = data.select(range(count))
    texts, truth = list(rows["text"]), list(rows["label"])
    probs = torch.cat(
        [task.probs(model, texts[i : i + batch_size]) for i in range(0, count, batch_size)]
    )
    return classify_side(texts, truth, probs, task.labels)


def combine(
    task, data, before: dict | None, after: dict | None, metrics_before=None, metrics=None
) -> dict | None:
    """The insights document from its two sides (and the run's own evaluation of the same
    weights, metrics_before and metrics); None when nothing was measured."""
    if after is None:
        return None
    cap = MAX_GENERATE_ROWS if task.task == "generate" else MAX_CLASSIFY_ROWS
    return {
        "version": SCHEMA_VERSION,
        "task": task.task,
        "labels": list(task.labels),
        "rows": min(len(data), cap),
        "rows_total": len(data),
        "before": before,
        "after": after,
        "metrics_before": dict(metrics_before or {}),
        "metrics": dict(metrics or {}),
    }
