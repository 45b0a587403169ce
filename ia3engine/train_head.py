"""A few-shot start for a new classification head: class means of the frozen features.

A randomly initialised head spends the first steps learning what the base already separates;
starting it as a nearest-class-mean classifier gives IA3 a useful gradient from step one.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

INIT_ROWS_PER_CLASS = 32  # enough for stable means; keeps the start-up pass short
_SCALES = torch.logspace(-1, 2.5, 36)


def output_layer(head: nn.Module, num_labels: int) -> nn.Linear | None:
    """The head's last Linear with one output per label."""
    found = None
    for module in [head, *head.modules()]:
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            found = module
    return found


def pick_rows(labels: list[int], num_labels: int, seed: int) -> list[int]:
    """Up to INIT_ROWS_PER_CLASS row indices per class, chosen with the run's seed."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=gen).tolist()
    taken: dict[int, int] = {}
    rows = []
    for i in order:
        if taken.get(labels[i], 0) < INIT_ROWS_PER_CLASS:
            taken[labels[i]] = taken.get(labels[i], 0) + 1
            rows.append(i)
    return rows


@torch.no_grad()
def init_from_class_means(model, heads: list[nn.Module], task, texts, labels, seed=0) -> bool:
    """Set the head's output layer to a scaled nearest-class-mean classifier.

    logit_c = s * (x . u_c - |u_c|^2 / 2 - u_c . m) with u_c = mu_c - m, m the mean of the class
    means: the same ranking as the Euclidean distance to each class mean. The scale s is the
    one that fits these rows best (cross-entropy), so the start is neither flat nor overconfident.
    """
    num_labels = len(task.labels)
    layer = next((x for x in (output_layer(h, num_labels) for h in heads) if x is not None), None)
    if layer is None:
        logger.info("No label-sized output layer found; the head keeps its random start.")
        return False
    rows = pick_rows(list(labels), num_labels, seed)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float()))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            task.probs(model, [texts[j] for j in chunk])
    finally:
        hook.remove()
        model.train(was_training)
    x = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).cpu()  # (N, d)
    y = torch.tensor([labels[j] for j in rows])
    present = [c for c in range(num_labels) if (y == c).any()]
    means = torch.zeros(num_labels, x.shape[1])
    for c in present:
        means[c] = x[y == c].mean(dim=0)
    center = means[present].mean(dim=0)
    u = means - center
    weight = u
    bias = -0.5 * (u * u).sum(dim=1) - u @ center
    absent = [c for c in range(num_labels) if c not in present]
    bias[absent] = -1e4 if absent else bias[absent]
    logits = x @ weight.T + bias
    losses = torch.stack([F.cross_entropy(s * logits, y) for s in _SCALES])
    scale = _SCALES[losses.argmin()].item()
    layer.weight.copy_((scale * weight).to(layer.weight))
    if layer.bias is not None:
        layer.bias.copy_((scale * bias).to(layer.bias))
    logger.info("Head starts from class means of %d rows (scale %.3g).", len(rows), scale)
    return True
