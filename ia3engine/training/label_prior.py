"""Label names as a prior: each label's name also trains as one row of its class.

The names are the only words a person wrote about the classes, and a sentence encoder already
places a name like "sports" near sports news. Trained as one row each beside the data, they
add a little of that knowledge to a few-shot set (measured in docs/training.md, Few rows). A
name means nothing to the body when it is an id ("0", "LABEL_2"): the rows are then noise, so
they are used only when the names, read zero-shot by the untouched body, sort the training
rows better than a shuffle of the same guesses would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ia3engine.training.head import pick_rows
from ia3engine.training.tasks import evaluating

# A sentence encoder was trained to embed sentences, so a name trains framed as one, the way
# zero-shot classification frames a label as a hypothesis sentence (measured against the bare
# name in docs/training.md, "Label names as rows"). The gate reads the bare names: the frame,
# the same in every row, would make even ids look alike to the data.
NAME_FRAME = "This text is about {}."


def readable_name(label) -> str:
    """A label's name as words: 'very_negative' reads 'very negative'; '' when nothing is left."""
    return " ".join(str(label).replace("_", " ").split())


def label_name_rows(labels: list[str], frame: str = NAME_FRAME) -> dict[str, list]:
    """One row per label, its text the label's readable name in `frame` ('very_negative'
    trains as 'This text is about very negative.'); a name with no text left gives no row."""
    texts, ids = [], []
    for index, label in enumerate(labels):
        name = readable_name(label)
        if name:
            texts.append(frame.format(name))
            ids.append(index)
    return {"text": texts, "label": ids}


def zero_shot_shares(guess: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(share of rows the guesses hit, share the same guesses shuffled would hit: the sum over
    classes of share guessed c x share truly c)."""
    if not len(truth):
        return 0.0, 0.0
    classes = torch.cat([guess, truth]).unique()
    chance = sum(
        ((guess == c).float().mean() * (truth == c).float().mean()).item() for c in classes
    )
    return (guess == truth).float().mean().item(), chance


def names_beat_chance(guess: torch.Tensor, truth: torch.Tensor) -> bool:
    """True when zero-shot guesses hit more rows than the same guesses shuffled would."""
    hits, chance = zero_shot_shares(guess, truth)
    return len(truth) > 0 and hits > chance


def label_rows_if_meaningful(model, task, texts, labels, names: list[str], seed=0):
    """(the label-name rows or None, what the zero-shot reading found): the rows only when the
    names mean something to the body.

    `task` is the EncoderClassify whose pooling the pair objective uses (`use_pairs` first).
    Reads up to 32 rows per class (the head start's rows) in eval mode, before any training.
    """
    bare = label_name_rows(names, frame="{}")
    if len(bare["text"]) < 2:
        return None, "fewer than two labels have a name"
    picked = pick_rows(list(labels), len(names), seed)
    with evaluating(model):
        data = F.normalize(task.embed(model, [texts[i] for i in picked]), dim=-1)
        name_vectors = F.normalize(task.embed(model, bare["text"]), dim=-1)
    ids = torch.tensor(bare["label"])
    guess = ids[(data @ name_vectors.T).argmax(dim=1)]
    truth = torch.tensor([labels[i] for i in picked])
    hits, chance = zero_shot_shares(guess, truth)
    found = f"read zero-shot, the names sort {hits:.0%} of {len(truth)} rows, chance {chance:.0%}"
    if not names_beat_chance(guess, truth):
        return None, f"{found}: no better than chance"
    return label_name_rows(names), found  # the same names, framed as they train
