"""T-Few losses over answer choices (LM, unlikelihood, length-normalised) and rank classification.

Everything works on token logits and targets, so causal LMs and seq2seq models share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100
# T-Few's code computes -log(1 - p + 0.01) for the unlikelihood term: the 0.01 keeps the loss
# finite when the model is already certain of a wrong token. The paper's formula has no epsilon.
UNLIKELIHOOD_EPS = 0.01


@dataclass
class ChoiceLosses:
    """The three T-Few terms and their unit-weighted sum (the paper tunes no weights)."""

    lm: torch.Tensor
    unlikelihood: torch.Tensor
    length_norm: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.lm + self.unlikelihood + self.length_norm


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token, and the mask of real (non-ignored) targets.

    logits (N, T, V) are already aligned with targets (N, T): logits[:, t] predicts targets[:, t].
    """
    mask = targets != IGNORE  # (N, T)
    safe = targets.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N, T)
    return picked * mask, mask


def causal_alignment(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift a causal LM's logits and labels so that position t predicts token t + 1."""
    return logits[:, :-1], labels[:, 1:]


def choice_scores(logits: torch.Tensor, targets: torch.Tensor, num_choices: int) -> torch.Tensor:
    """Length-normalised NLL of each choice, (B, C): summed NLL over the choice's token count.

    Rows are ordered example by example: row b * num_choices + c is choice c of example b. The
    token count includes EOS when the targets carry it, as in T-Few (length_norm exponent 1).
    """
    picked, mask = token_logprobs(logits, targets)
    nll = -picked.sum(dim=-1)  # (B*C,)
    lengths = mask.sum(dim=-1).clamp(min=1)
    return (nll / lengths).view(-1, num_choices)


def rank_classify(scores: torch.Tensor) -> torch.Tensor:
    """Predicted choice per example: the lowest length-normalised NLL. scores (B, C) -> (B,)."""
    return scores.argmin(dim=-1)


def choice_probs(scores: torch.Tensor) -> torch.Tensor:
    """A distribution over choices from their scores: softmax of the negated NLLs, (B, C)."""
    return torch.softmax(-scores, dim=-1)


def tfew_losses(
    logits: torch.Tensor, targets: torch.Tensor, num_choices: int, correct: torch.Tensor
) -> ChoiceLosses:
    """L_LM + L_UL + L_LN for a batch of B examples with C choices each.

    logits (B*C, T, V) aligned with targets (B*C, T), IGNORE on padding; correct (B,) holds the
    index of the right choice. L_LM is the token mean of the cross-entropy on the right choices,
    L_UL the token mean of -log(1 - p + 0.01) on the wrong ones, and L_LN a cross-entropy over
    the choices scored by their length-normalised log-likelihood.
    """
    picked, mask = token_logprobs(logits, targets)  # (B*C, T)
    batch = correct.shape[0]
    picked = picked.view(batch, num_choices, -1)  # (B, C, T)
    mask = mask.view(batch, num_choices, -1)
    is_right = F.one_hot(correct, num_choices).bool().unsqueeze(-1)  # (B, C, 1)

    right_mask = mask & is_right
    lm = -(picked * right_mask).sum() / right_mask.sum().clamp(min=1)

    wrong_mask = mask & ~is_right
    p = picked.exp()
    ul_tokens = -torch.log1p(-p + UNLIKELIHOOD_EPS)  # -log(1 - p + eps)
    unlikelihood = (ul_tokens * wrong_mask).sum() / wrong_mask.sum().clamp(min=1)

    lengths = mask.sum(dim=-1).clamp(min=1)  # (B, C)
    beta = picked.sum(dim=-1) / lengths  # mean log-likelihood per choice
    length_norm = F.cross_entropy(beta, correct)
    return ChoiceLosses(lm=lm, unlikelihood=unlikelihood, length_norm=length_norm)


def causal_choice_batch(
    prompts: list[list[int]], choices: list[list[int]], pad_id: int, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Every (prompt, choice) pair as one right-padded causal sequence, example by example.

    Returns input_ids and attention_mask (B*C, L) and labels (B*C, L) that are IGNORE except on
    the choice's tokens; shift them with `causal_alignment` after the forward pass. A prompt
    too long for max_length loses its start, so the question at its end survives.
    """
    rows, labels = [], []
    for prompt in prompts:
        for choice in choices:
            keep = len(prompt) if max_length is None else max(1, max_length - len(choice))
            head = prompt[-keep:]
            rows.append(head + choice)
            labels.append([IGNORE] * len(head) + choice)
    return pad_rows(rows, labels, pad_id)


def seq2seq_choice_targets(num_examples: int, choices: list[list[int]]) -> torch.Tensor:
    """Decoder targets (B*C, T) for a seq2seq model: each choice (with its EOS), IGNORE-padded."""
    rows = [choice for _ in range(num_examples) for choice in choices]
    return pad_rows(rows, rows, 0)["labels"]


def pad_rows(rows: list[list[int]], labels: list[list[int]], pad_id: int) -> dict:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        targets[i, : len(label)] = torch.tensor(label)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": targets}


def pair_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SetFit's contrastive objective over every pair of rows in the batch: the cosine of two
    rows' features regressed to 1 when they share a label and to 0 when they do not (squared
    error, averaged over pairs). A batch of B rows gives B(B-1)/2 pairs for one forward, so a
    few labelled rows teach the representation far more than their B cross-entropy terms;
    returns 0 for a batch of one row."""
    if len(labels) < 2:
        return features.sum() * 0.0
    unit = F.normalize(features.float(), dim=-1)
    cosine = unit @ unit.T
    same = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    upper = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    return (cosine - same)[upper[0], upper[1]].pow(2).mean()
