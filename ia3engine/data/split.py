"""Splitting examples into training and validation sets, and cutting texts to a token budget.

Splits are seeded and deterministic; truncation cuts the original text at a token boundary.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from ia3engine.errors import DataError

# With no eval file and no share chosen, validation rows are held back only when they are enough
# to score: an accuracy measured on n rows moves by about 0.5 / sqrt(n), 0.07 at 50 rows. Below
# that the rows are worth more in training than in a score that cannot tell runs apart.
AUTO_VAL_FRACTION = 0.1
AUTO_VAL_MIN_ROWS = 50


def auto_val_fraction(n_rows: int) -> float:
    """The validation share when none was chosen: AUTO_VAL_FRACTION once that holds back at
    least AUTO_VAL_MIN_ROWS rows (500 rows or more), else 0 (every row trains)."""
    return AUTO_VAL_FRACTION if n_rows * AUTO_VAL_FRACTION >= AUTO_VAL_MIN_ROWS else 0.0


def stratified_split(
    labels: list[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indices (train, validation) keeping each class's share, every class keeping at
    least one training row. Raises when a class has fewer than 2 rows."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    small = sorted(c for c, rows in by_class.items() if len(rows) < 2)
    if small:
        need = 2 * len(by_class)
        names = ", ".join(f"'{c}'" for c in small)
        raise DataError(
            f"Too few rows to split off a validation set: class {names} has only 1 row, and "
            f"each class needs at least 2 (at least {need} rows for {len(by_class)} classes). "
            "Add more examples of that class, or give a separate eval file."
        )
    target = max(1, round(len(labels) * val_fraction))
    shares = {c: len(rows) * target / len(labels) for c, rows in by_class.items()}
    # Largest remainder: floors first, then the classes closest to their next row.
    taken = {c: min(math.floor(s), len(by_class[c]) - 1) for c, s in shares.items()}
    order = sorted(by_class, key=lambda c: (-(shares[c] - math.floor(shares[c])), c))
    while sum(taken.values()) < target and any(taken[c] < len(by_class[c]) - 1 for c in order):
        for c in order:
            if sum(taken.values()) < target and taken[c] < len(by_class[c]) - 1:
                taken[c] += 1
    rng = random.Random(seed)
    validation: list[int] = []
    for c in sorted(by_class):
        rows = list(by_class[c])
        rng.shuffle(rows)
        validation += rows[: taken[c]]
    held = set(validation)
    return [i for i in range(len(labels)) if i not in held], sorted(validation)


def random_split(n_rows: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, validation) for generation data; needs at least 2 rows."""
    if n_rows < 2:
        raise DataError(
            f"Too few rows to split off a validation set: the file has {n_rows} usable row, "
            "and at least 2 are needed. Add rows, or give a separate eval file."
        )
    size = min(n_rows - 1, max(1, round(n_rows * val_fraction)))
    validation = sorted(random.Random(seed).sample(range(n_rows), size))
    held = set(validation)
    return [i for i in range(n_rows) if i not in held], validation


def _token_ends(tokenizer, texts: list[str]) -> list[list[int]]:
    """For each text, the character offset where each of its tokens ends."""
    if not texts:
        return []
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [[end for _, end in offsets] for offsets in encoded["offset_mapping"]]
    # Slow tokenizers have no offsets: decode growing prefixes instead (rare, and slow).
    ends = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ends.append([len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))])
    return ends


def _cut(text: str, ends: list[int], keep: int) -> str:
    return "" if keep <= 0 else text[: ends[keep - 1]]


def _budget(tokenizer, max_length: int) -> int:
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= specials:
        raise DataError(
            f"max_length={max_length} leaves no room for text after the tokenizer's "
            f"{specials} special tokens. Set max_length above {specials}, e.g. 128."
        )
    budget = max_length - specials
    return budget


def truncate_texts(texts: list[str], tokenizer, max_length: int) -> tuple[list[str], int]:
    """Cut texts longer than `max_length` tokens (special tokens included); returns the new
    texts and how many were cut."""
    budget = _budget(tokenizer, max_length)
    out, cut = list(texts), 0
    for i, ends in enumerate(_token_ends(tokenizer, texts)):
        if len(ends) > budget:
            out[i], cut = _cut(texts[i], ends, budget), cut + 1
    return out, cut


def truncate_pairs(
    prompts: list[str], responses: list[str], tokenizer, max_length: int
) -> tuple[list[str], list[str], int]:
    """Cut prompt + response pairs longer than `max_length` tokens. The response keeps its
    tokens while the prompt fits; a long prompt is cut so the response keeps at least half."""
    budget = _budget(tokenizer, max_length)
    prompts, responses, cut = list(prompts), list(responses), 0
    prompt_ends = _token_ends(tokenizer, prompts)
    response_ends = _token_ends(tokenizer, responses)
    for i, (p_ends, r_ends) in enumerate(zip(prompt_ends, response_ends, strict=True)):
        if len(p_ends) + len(r_ends) <= budget:
            continue
        keep_response = min(len(r_ends), max(budget - len(p_ends), budget // 2))
        keep_prompt = min(len(p_ends), budget - keep_response)
        prompts[i] = _cut(prompts[i], p_ends, keep_prompt)
        responses[i] = _cut(responses[i], r_ends, keep_response)
        cut += 1
    return prompts, responses, cut
