"""Dataset files -> validated, mapped, split examples: the public data API of ia3engine.

`inspect_dataset` previews a file for the studio; `prepare_dataset` returns the training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import datasets
import pandas as pd

from ia3engine.data.columns import (
    PROMPT_NAMES,
    RESPONSE_NAMES,
    guess_by_name,
    guess_label_column,
    guess_text_column,
    is_missing,
    label_strings,
    require_column,
    sort_labels,
)
from ia3engine.data.examples import (
    check_label_set,
    classify_examples,
    classify_splits,
    generate_examples,
    generate_splits,
)
from ia3engine.data.read import Table, read_table
from ia3engine.data.split import truncate_pairs, truncate_texts
from ia3engine.errors import DataError

logger = logging.getLogger(__name__)

TASKS = ("classify", "generate")
PREVIEW_ROWS = 5


@dataclass
class DatasetSummary:
    """What the studio shows after an upload; for `generate`, text/label are prompt/response."""

    path: str
    format: str
    n_rows: int
    columns: list[str]
    text_column: str | None
    label_column: str | None
    labels: list[str]
    class_counts: dict[str, int]
    preview: list[dict]
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedData:
    """Training and validation examples. classify: columns text, label (id into `labels`);
    generate: prompt, response. `fingerprint` identifies the data and mapping."""

    train: datasets.Dataset
    eval: datasets.Dataset
    labels: list[str]
    task: str
    text_column: str | None
    label_column: str | None
    warnings: list[str]
    fingerprint: str
    n_truncated: int = 0


def inspect_dataset(
    path: str | PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    task: str = "classify",
    max_rows: int | None = None,
) -> DatasetSummary:
    """Read a file and guess its mapping. Unusable files and unknown columns raise DataError;
    problems in the rows (missing labels, one class, imbalance) come back as warnings."""
    _check_options(task, 0.0, max_rows, None)
    source = display_name(path)
    table = read_table(path, max_rows=max_rows)
    text, label = _resolve(table, task, text_column, label_column, source)
    warnings = list(table.warnings) + _unresolved(task, table, text, label, strict=False)
    labels: list[str] = []
    counts: dict[str, int] = {}
    if task == "classify" and label is not None:
        found = Counter(v for v in label_strings(table.frame[label]) if v is not None)
        labels = sort_labels(found)
        counts = {name: found[name] for name in labels}
        if text is not None:
            warnings += _soft(lambda: classify_examples(table.frame, text, label, None, source)[2])
        warnings += _soft(lambda: check_label_set(list(found.elements()), label, source)[1])
    if task == "generate" and label is not None:
        warnings += _soft(lambda: generate_examples(table.frame, text, label, None, source)[2])
    return DatasetSummary(
        path=str(path),
        format=table.format,
        n_rows=len(table.frame),
        columns=list(table.frame.columns),
        text_column=text,
        label_column=label,
        labels=labels,
        class_counts=counts,
        preview=_preview(table.frame),
        warnings=list(dict.fromkeys(warnings)),
    )


def display_name(path) -> str:
    """How messages name a source: a file by its name, a Hub dataset by its id."""
    file = Path(str(path))
    return file.name if file.exists() else str(path)


def _soft(check) -> list[str]:
    """Warnings from `check`, with a DataError it raises turned into one more warning."""
    try:
        return check()
    except DataError as err:
        return [str(err)]


def prepare_dataset(
    path: str | PathLike,
    *,
    eval_path: str | PathLike | None = None,
    task: str = "classify",
    text_column: str | None = None,
    label_column: str | None = None,
    template: str | None = None,
    val_fraction: float | None = 0.1,
    max_rows: int | None = 100_000,
    seed: int = 0,
    tokenizer=None,
    max_length: int | None = None,
) -> PreparedData:
    """Load, check, map and split a dataset. Every problem raises DataError; nothing is written.

    Without `eval_path` (or a Hub "validation" split) a seeded validation split is taken:
    stratified by label for classify; `val_fraction=None` leaves the share to the row count
    (`split.auto_val_fraction`: none below 500 rows), 0 takes none. With `tokenizer` and `max_length`, longer rows are cut.
    """
    _check_options(task, val_fraction, max_rows, max_length)
    source = display_name(path)
    table = read_table(path, max_rows=max_rows)
    text, label = _resolve(table, task, text_column, label_column, source)
    warnings = list(table.warnings) + _unresolved(task, table, text, label, True, template)
    eval_table = None
    if eval_path is not None:
        eval_table = read_table(eval_path, max_rows=max_rows, role="eval")
        warnings += eval_table.warnings
    eval_frame = eval_table.frame if eval_table is not None else table.eval_frame
    eval_source = display_name(eval_path) if eval_path is not None else f"{source} (validation)"
    build = classify_splits if task == "classify" else generate_splits
    train, evaluation, labels, notes = build(
        table.frame, eval_frame, text, label, template, (source, eval_source), val_fraction, seed
    )
    warnings += notes
    n_truncated = 0
    if tokenizer is not None and max_length is not None:
        n_truncated = sum(
            _truncate(part, task, tokenizer, max_length) for part in (train, evaluation)
        )
        if n_truncated:
            warnings.append(
                f"{n_truncated} rows were longer than {max_length} tokens and were truncated"
            )
    options = dict(task=task, text_column=text, label_column=label, template=template)
    options.update(val_fraction=val_fraction, seed=seed)
    if tokenizer is not None:
        options.update(max_length=max_length, tokenizer=getattr(tokenizer, "name_or_path", None))
    for note in warnings:
        logger.warning("%s", note)
    return PreparedData(
        train=_dataset(train, task),
        eval=_dataset(evaluation, task),
        labels=labels,
        task=task,
        text_column=text,
        label_column=label,
        warnings=list(dict.fromkeys(warnings)),
        fingerprint=_fingerprint(table, eval_table, options),
        n_truncated=n_truncated,
    )


def _check_options(task, val_fraction, max_rows, max_length) -> None:
    if task not in TASKS:
        raise DataError(f"Unknown task '{task}'. Choose one of: {', '.join(TASKS)}.")
    if val_fraction is not None and not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(
            f"val_fraction={val_fraction} is out of range. Use a fraction from 0 to below 1, "
            "e.g. 0.1 to keep 10% of the rows for validation."
        )
    for name, value in (("max_rows", max_rows), ("max_length", max_length)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DataError(f"{name}={value!r} must be a positive whole number, or unset.")


def _resolve(table: Table, task, text_column, label_column, source) -> tuple:
    """(text, label) columns for classify, (prompt, response) for generate: the caller's
    choices after checking they exist, else guesses (None when nothing fits)."""
    columns = list(table.frame.columns)
    text_role, label_role = ("text", "label") if task == "classify" else ("prompt", "response")
    for name, role in ((text_column, text_role), (label_column, label_role)):
        if name is not None:
            require_column(name, columns, role, source)
    if text_column is not None and text_column == label_column:
        raise DataError(
            f"The {text_role} and {label_role} columns are both '{text_column}'. "
            "Choose two different columns in the mapping."
        )
    frame = table.frame
    if task == "classify":
        if table.format == "txt":
            raise DataError(
                f"'{source}' is plain text: one example per line and no labels, so it can only "
                "train the generate task. For classify, upload a CSV, JSONL or Parquet file "
                "with a text column and a label column."
            )
        label = label_column or guess_label_column(frame, {text_column})
        return text_column or guess_text_column(frame, {label}), label
    if table.format == "txt" and text_column is None and label_column is None:
        return None, "text"  # each line is a response learned without a prompt
    label = label_column or guess_by_name(frame, RESPONSE_NAMES, {text_column})
    return text_column or guess_by_name(frame, PROMPT_NAMES, {label}), label


def _unresolved(task, table, text, label, strict, template=None) -> list[str]:
    """Messages for columns that could not be guessed; raised at once when `strict`."""
    roles = ("text", "label") if task == "classify" else ("prompt", "response")
    argument = {"text": "text_column", "prompt": "text_column"}
    needs_text = template is None and not (task == "generate" and table.format == "txt")
    problems = []
    for column, role, needed in ((label, roles[1], True), (text, roles[0], needs_text)):
        if column is None and needed:
            problems.append(
                f"Could not tell which column holds the {role}; columns are: "
                f"{', '.join(table.frame.columns)}. Choose the {role} column in the mapping "
                f"({argument.get(role, 'label_column')})."
            )
    if strict and problems:
        raise DataError(" ".join(problems))
    return problems


def _truncate(part: dict, task: str, tokenizer, max_length: int) -> int:
    if task == "classify":
        part["text"], cut = truncate_texts(part["text"], tokenizer, max_length)
        return cut
    part["prompt"], part["response"], cut = truncate_pairs(
        part["prompt"], part["response"], tokenizer, max_length
    )
    return cut


def _dataset(columns: dict, task: str) -> datasets.Dataset:
    if task == "classify":
        features = {"text": datasets.Value("string"), "label": datasets.Value("int64")}
    else:
        features = {"prompt": datasets.Value("string"), "response": datasets.Value("string")}
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _fingerprint(table: Table, eval_table: Table | None, options: dict) -> str:
    """sha256 over the data (file bytes, or Hub id and revision) and every mapping option."""
    digest = hashlib.sha256(table.digest.encode())
    digest.update((eval_table.digest if eval_table is not None else "-").encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _plain(value):
    """A cell as a JSON-friendly Python value for the preview."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return None if is_missing(value) else value


def _preview(frame: pd.DataFrame) -> list[dict]:
    records = frame.head(PREVIEW_ROWS).to_dict("records")
    return [{str(k): _plain(v) for k, v in record.items()} for record in records]
