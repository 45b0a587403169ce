"""Predicting a whole file: every row of a CSV/JSONL/Parquet file through an adapter (or the base
alone), written back in the same format with the predictions beside the input (`ia3 predict`).

Bounded: rows (max_rows, refused past it), tokens per text (the adapter's max_length, cut as in
training), new tokens per generated answer (max_new_tokens); progress and stop between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ia3engine.data.columns import guess_text_column, require_column, text_strings
from ia3engine.data.read import read_table
from ia3engine.errors import AdapterError, DataError, IA3Error
from ia3engine.serve.adapter_info import read_training_info
from ia3engine.serve.predict import Predictor
from ia3engine.training.loading import portable_base_name

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 16
MAX_BATCH = 256
DEFAULT_NEW_TOKENS = 64
MAX_NEW_TOKENS = 512
PREDICTED = "predicted_label"
GENERATED = "generated_text"
PROB_PREFIX = "prob_"
# The format a prediction file is written in, by the input's format, and its extension.
OUTPUT_FORMATS = {
    "csv": ("csv", ".csv"),
    "tsv": ("tsv", ".tsv"),
    "json": ("json", ".json"),
    "jsonl": ("jsonl", ".jsonl"),
    "parquet": ("parquet", ".parquet"),
    "txt": ("jsonl", ".jsonl"),  # plain text has no columns: the rows come back as JSONL
}
# A cell a spreadsheet would run as a formula (CSV injection), when it starts with one of these.
_FORMULA_START = ("=", "@", "\t", "\r", "+", "-")
_ADAPTER = "adapter"
_BASE = "base"


@dataclass
class FilePrediction:
    """What predict_file did: where the file went (None when stopped), rows, and notes."""

    out_path: str | None
    rows: int  # rows predicted (all of them unless stopped)
    total_rows: int
    format: str  # the output's format
    task: str
    text_column: str
    labels: list[str]
    stopped: bool
    seconds: float
    truncated: int = 0  # rows longer than max_length tokens, cut as in training
    warnings: list[str] = field(default_factory=list)


def output_format(input_format: str) -> tuple[str, str]:
    """(format, extension) of the prediction file for an input of `input_format`."""
    if input_format not in OUTPUT_FORMATS:
        raise DataError(
            f"Predictions are written for a file (CSV, TSV, JSON, JSONL, Parquet or text), not "
            f"for input read as {input_format}. Download the data and pass the file."
        )
    return OUTPUT_FORMATS[input_format]


def default_out_path(data: str | Path, input_format: str) -> Path:
    """`<name>.predictions.<ext>` beside the input."""
    source = Path(data)
    return source.with_name(f"{source.stem}.predictions{output_format(input_format)[1]}")


def check_bounds(batch_size: int, max_new_tokens: int) -> None:
    """Refuse a batch size or generation length outside what predict_file allows."""
    problems = []
    if not 1 <= int(batch_size) <= MAX_BATCH:
        problems.append(f"batch_size must be 1 to {MAX_BATCH}, got {batch_size}.")
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        problems.append(f"max_new_tokens must be 1 to {MAX_NEW_TOKENS}, got {max_new_tokens}.")
    if problems:
        raise DataError(" ".join(problems))


def choose_text_column(frame: pd.DataFrame, given: str | None, info: dict, source: str) -> str:
    """The column to predict from: the caller's, else the adapter's training column when the
    file has it, else the longest text column (as training guesses it)."""
    columns = list(frame.columns)
    if given:
        require_column(given, columns, "text", source, "Name one of them as the text column.")
        return given
    trained = info.get("text_column")
    if trained and trained in columns:
        return trained
    guessed = guess_text_column(frame, set())
    if guessed is None:
        raise DataError(
            f"No column of '{source}' holds text; columns are: {', '.join(columns)}. "
            "Name the column that holds the text (the text column)."
        )
    return guessed


def predict_file(
    model: str | None,
    data: str | Path,
    out: str | Path | None = None,
    *,
    adapter: str | Path | None = None,
    task: str | None = None,
    labels: list[str] | None = None,
    text_column: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    max_rows: int | None = None,
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    device=None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FilePrediction:
    """Predict every row of `data` with the adapter folder `adapter` (None: the base alone) and
    write the rows, unchanged, plus `predicted_label` and `prob_<label>` (classify) or
    `generated_text` (generate) to `out`, in the input's format.

    The base alone generates (task "generate"), or with `labels` ranks them as answers (a
    causal or seq2seq base; an encoder alone has no trained head). `on_progress(done, total)`
    follows each batch; `should_stop()` is asked before each one: then nothing is written and
    the result has stopped=True. Raises DataError / AdapterError / ModelLoadError.
    """
    started = time.perf_counter()
    check_bounds(batch_size, max_new_tokens)
    info = read_training_info(adapter) if adapter else {}
    model = model or info.get("base_model")
    if not model:
        raise AdapterError("No base model: give the model (--model) to predict with.")
    task = task or info.get("task") or ("classify" if labels else "generate")
    source = Path(str(data))
    if not source.is_file():
        raise DataError(f"The file '{source.name}' was not found. Check the path and try again.")
    table = read_table(source, max_rows=max_rows)
    fmt, ext = output_format(table.format)
    column = choose_text_column(table.frame, text_column, info, source.name)
    target = Path(out) if out else default_out_path(source, table.format)
    _check_out(target, source, fmt, ext)
    cells = text_strings(table.frame[column])
    texts = ["" if cell is None else cell for cell in cells]
    warnings = list(table.warnings)
    empty = sum(cell is None for cell in cells)
    if empty:
        warnings.append(f"{empty} rows have an empty '{column}'; they were predicted from ''.")

    predictor, name = _predictor(model, task, adapter, labels, info, device)
    truncated = predictor.truncated(texts, name)
    if truncated:
        warnings.append(
            f"{truncated} rows are longer than the {_limit(predictor, name)} tokens the model "
            "reads; they were cut, as in training."
        )
    results, stopped = [], False
    total = len(texts)
    if on_progress:
        on_progress(0, total)
    for start in range(0, total, int(batch_size)):
        if should_stop and should_stop():
            stopped = True
            break
        chunk = texts[start : start + int(batch_size)]
        results += predictor.predict(chunk, [name] * len(chunk), max_new_tokens=max_new_tokens)
        if on_progress:
            on_progress(len(results), total)
    answer_labels = [] if task == "generate" else predictor.labels_of(name)
    if not stopped:
        frame = with_predictions(table.frame, results, task, answer_labels, warnings)
        write_table(frame, target, fmt)
    logger.info("predicted %s of %s rows of %s", len(results), total, source.name)
    return FilePrediction(
        out_path=None if stopped else str(target),
        rows=len(results),
        total_rows=total,
        format=fmt,
        task=task,
        text_column=column,
        labels=answer_labels,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        truncated=truncated,
        warnings=warnings,
    )


def _limit(predictor: Predictor, name: str) -> int:
    return predictor.adapters[name]["task_obj"].max_length


def _check_out(target: Path, source: Path, fmt: str, ext: str) -> None:
    if target.resolve() == source.resolve():
        raise DataError(
            f"The output '{target.name}' is the input file; write the predictions elsewhere."
        )
    known = {e for _, e in OUTPUT_FORMATS.values()} | {".pq", ".ndjson", ".tab", ".txt"}
    suffix = target.suffix.lower()
    if suffix in known and suffix != ext and not (fmt == "parquet" and suffix == ".pq"):
        raise DataError(
            f"The output '{target.name}' names another format than the input's: predictions "
            f"keep the input's format ({fmt}). Name it '{target.stem}{ext}'."
        )


def _predictor(model, task, adapter, labels, info, device) -> tuple[Predictor, str]:
    """A Predictor with the adapter (checked against the base) or the bare base loaded."""
    predictor = Predictor(model, task=task, device=device)
    if adapter:
        try:
            predictor.add_adapter(_ADAPTER, adapter)
        except (IA3Error, RuntimeError, KeyError, ValueError) as err:
            trained_on = info.get("base_model")
            if trained_on and not _same_base(trained_on, model):
                raise AdapterError(
                    f"This adapter was trained on '{trained_on}', not '{model}', and does not "
                    f"fit it ({str(err)[:200]}). Predict with the model '{trained_on}'."
                ) from err
            raise
        return predictor, _ADAPTER
    if task != "generate" and not labels:
        raise DataError(
            "The base alone labels rows only with labels to choose from: give them (--labels), "
            "or pick an adapter."
        )
    predictor.add_untuned(labels, name=_BASE)
    if predictor.adapters[_BASE]["kind"] == "encoder":
        raise AdapterError(
            f"'{model}' is an encoder: alone it has no trained head to label rows with and it "
            "cannot generate text. Pick an adapter trained on it."
        )
    return predictor, _BASE


def _same_base(a: str, b: str) -> bool:
    if portable_base_name(a) == portable_base_name(b):
        return True
    first, second = Path(a).expanduser(), Path(b).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def with_predictions(
    frame: pd.DataFrame, results: list[dict], task: str, labels: list[str], warnings: list[str]
) -> pd.DataFrame:
    """The input rows unchanged, with the prediction columns after them."""
    if task == "generate":
        added = {GENERATED: [r["text"] for r in results]}
    else:
        added = {PREDICTED: [r["label"] for r in results]}
        for label in labels:
            added[f"{PROB_PREFIX}{label}"] = [float(r["probs"][label]) for r in results]
    replaced = [name for name in added if name in frame.columns]
    if replaced:
        warnings.append(f"The input's columns {', '.join(replaced)} were replaced by predictions.")
    out = frame.drop(columns=replaced).reset_index(drop=True)
    for name, values in added.items():
        out[name] = values
    return out


def _inert(value):
    """A text cell a spreadsheet would read as a formula, with a leading apostrophe; numbers
    such as -1 or +0.5 stay as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if value[0] in "+-":
        try:
            float(value)
            return value
        except ValueError:
            pass
    return "'" + value


def write_table(frame: pd.DataFrame, target: Path, fmt: str) -> None:
    """Write `frame` in `fmt`; a half-written file never stands at `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    if fmt in ("csv", "tsv"):
        # The prediction columns come from the model: made inert for spreadsheets. The
        # input's own cells are the person's data and stay exactly as they were.
        safe = frame.copy()
        for name in (PREDICTED, GENERATED):
            if name in safe.columns:
                safe[name] = [_inert(v) for v in safe[name]]
        safe.to_csv(partial, index=False, sep="\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        frame.to_json(partial, orient="records", lines=True, force_ascii=False)
    elif fmt == "json":
        frame.to_json(partial, orient="records", force_ascii=False, indent=1)
    else:
        frame.to_parquet(partial, index=False)
    partial.replace(target)
