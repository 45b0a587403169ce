"""Label names as a prior: each label's name also trains as one row of its class.

The names are the only words a person wrote about the classes, and a sentence encoder already
places a name like "sports" near sports news. Trained as one row each beside the data, they
add a little of that knowledge to a few-shot set (measured in docs/training.md, Few rows). A
name means nothing to the body when it is an id ("0", "LABEL_2"): the rows are then noise, so
they are used only when the names, read zero-shot by the untouched body, sort the training
rows better than a shuffle of the same guesses would.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ia3engine.training.head import pick_rows
from ia3engine.training.pooling import sentence_embedding

logger = logging.getLogger(__name__)


def label_name_rows(labels: list[str]) -> dict[str, list]:
    """One row per label, its text the label's name ('very_negative' reads 'very negative');
    a name with no text left gives no row."""
    texts, ids = [], []
    for index, label in enumerate(labels):
        text = " ".join(str(label).replace("_", " ").split())
        if text:
            texts.append(text)
            ids.append(index)
    return {"text": texts, "label": ids}


@torch.no_grad()
def _embed(model, task, texts: list[str], pooling) -> torch.Tensor:
    """Unit sentence embeddings of these texts, pooled as the body was pre-trained to pool."""
    parts = []
    for i in range(0, len(texts), 32):
        inputs = task.to_device(task._encode(texts[i : i + 32]))
        with task.autocast():
            out = model(**inputs, output_hidden_states=True)
        pooled = sentence_embedding(
            out.hidden_states[-1].float(), inputs.get("attention_mask"), pooling
        )
        parts.append(F.normalize(pooled, dim=-1).cpu())
    return torch.cat(parts)


def names_beat_chance(guess: torch.Tensor, truth: torch.Tensor) -> bool:
    """True when zero-shot guesses hit more rows than the same guesses shuffled would: the sum
    over classes of (share guessed c) x (share truly c), times the rows."""
    if not len(truth):
        return False
    classes = torch.cat([guess, truth]).unique()
    chance = sum(
        ((guess == c).float().mean() * (truth == c).float().mean()).item() for c in classes
    )
    return (guess == truth).sum().item() > chance * len(truth)


def label_rows_if_meaningful(model, task, texts, labels, names: list[str], pooling, seed=0):
    """The label-name rows when the names mean something to the body, else None (and why).

    Reads up to 32 rows per class (the head start's rows) in eval mode, before any training.
    """
    rows = label_name_rows(names)
    if len(rows["text"]) < 2:
        return None, "fewer than two labels have a name"
    picked = pick_rows(list(labels), len(names), seed)
    was_training = model.training
    model.eval()
    try:
        data = _embed(model, task, [texts[i] for i in picked], pooling)
        name_vectors = _embed(model, task, rows["text"], pooling)
    finally:
        model.train(was_training)
    ids = torch.tensor(rows["label"])
    guess = ids[(data @ name_vectors.T).argmax(dim=1)]
    truth = torch.tensor([labels[i] for i in picked])
    if not names_beat_chance(guess, truth):
        hits = (guess == truth).float().mean().item()
        return None, f"the names, read zero-shot, sort the rows no better than chance ({hits:.0%})"
    return rows, None
