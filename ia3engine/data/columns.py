"""Column mapping for datasets: guessing the text/label (prompt/response) columns, checking
the caller's choices, turning cells into clean strings, and prompt templates."""

from __future__ import annotations

import difflib
import math
import re

import pandas as pd

from ia3engine.data.templates import template_names, template_problem
from ia3engine.errors import DataError

TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "input",
    "question",
    "prompt",
    "instruction",
    "utterance",
    "document",
    "body",
    "comment",
    "message",
    "query",
    "tweet",
    "description",
    "premise",
    "passage",
    "title",
)
LABEL_NAMES = (
    "label",
    "labels",
    "class",
    "category",
    "sentiment",
    "intent",
    "target",
    "output",
    "tag",
    "topic",
    "polarity",
    "emotion",
    "rating",
    "stars",
    "y",
)
PROMPT_NAMES = ("instruction", "prompt", "input", "question", "query", "source", "text")
RESPONSE_NAMES = ("response", "output", "answer", "completion", "target", "summary", "label")
# Only empty cells and these spellings count as a missing label; "None" or "NA" may be classes.
_MISSING = {"", "nan", "null"}
ROW_NUMBERS = "row 1 is the first data row"


def suggest_column(name: str, columns: list[str]) -> str:
    """' Did you mean ...?' for a misspelt column, or '' when nothing is close."""
    by_lower = {c.lower(): c for c in columns}
    if name.lower() in by_lower:
        return f" Did you mean '{by_lower[name.lower()]}'?"
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    close = close or [
        by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), cutoff=0.6)
    ]
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def require_column(
    name: str, columns: list[str], role: str, source: str, fix: str | None = None
) -> None:
    """Raise when the caller's column `name` (used as `role`) is not in the table."""
    if name in columns:
        return
    raise DataError(
        f"Column '{name}' not found in '{source}'; columns are: {', '.join(columns)}."
        f"{suggest_column(name, columns)} {fix or f'Choose the {role} column in the mapping.'}"
    )


def _named(columns: list[str], names: tuple[str, ...], exclude: set) -> list[str]:
    """Columns whose name is one of `names` (in that priority), then ones containing a name."""
    free = [c for c in columns if c not in exclude]
    exact = [c for n in names for c in free if c.strip().lower() == n]
    tokens = [c for n in names if len(n) > 2 for c in free if n in c.lower() and c not in exact]
    return list(dict.fromkeys(exact + tokens))


def _is_text(series: pd.Series) -> bool:
    values = series.dropna()
    return len(values) > 0 and sum(isinstance(v, str) for v in values) >= 0.9 * len(values)


def _mean_length(series: pd.Series) -> float:
    return float(series.dropna().astype(str).str.len().mean() or 0.0)


def guess_text_column(frame: pd.DataFrame, exclude: set) -> str | None:
    """The string column with the longest average text among the usual text names,
    else among all string columns."""
    columns = [c for c in frame.columns if _is_text(frame[c])]
    candidates = _named(columns, TEXT_NAMES, exclude) or [c for c in columns if c not in exclude]
    if not candidates:
        return None
    return max(candidates, key=lambda c: _mean_length(frame[c]))


def _distinct(series: pd.Series) -> int:
    # Through label_strings: cells may hold lists (JSON), which pandas cannot count.
    return len({v for v in label_strings(series) if v is not None})


def _few_values(series: pd.Series) -> bool:
    return 2 <= _distinct(series) <= max(2, min(100, len(series) // 2))


def guess_label_column(frame: pd.DataFrame, exclude: set) -> str | None:
    """A column named like a label: by its exact name, or containing such a name and with few
    distinct values; else the column with the fewest distinct values (at most 20)."""
    columns = list(frame.columns)
    for column in _named(columns, LABEL_NAMES, exclude):
        # An exact name is taken as the caller's intent even with odd values: the label
        # checks then explain what is wrong instead of a vague "could not tell".
        if column.strip().lower() in LABEL_NAMES or _few_values(frame[column]):
            return column
    counts = {c: _distinct(frame[c]) for c in columns if c not in exclude}
    others = [c for c, n in counts.items() if _few_values(frame[c]) and n <= 20]
    return min(others, key=counts.get, default=None)


def guess_by_name(frame: pd.DataFrame, names: tuple[str, ...], exclude: set) -> str | None:
    """The first string column named like `names`, in their priority order."""
    columns = [c for c in frame.columns if _is_text(frame[c])]
    found = _named(columns, names, exclude)
    return found[0] if found else None


def is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, dict, tuple)) or not pd.api.types.is_scalar(value):
        return False
    return bool(pd.isna(value))


def label_strings(values) -> list[str | None]:
    """Labels as strings: ints become "0", "1"; integral floats lose ".0"; missing -> None."""
    out: list[str | None] = []
    for value in values:
        if is_missing(value):
            out.append(None)
        elif isinstance(value, bool):
            out.append(str(value))
        elif isinstance(value, int) or type(value).__name__.startswith(("int", "uint")):
            out.append(str(int(value)))
        elif isinstance(value, float) or type(value).__name__.startswith("float"):
            out.append(str(int(value)) if float(value).is_integer() else repr(float(value)))
        else:
            text = str(value).strip()
            out.append(None if text.lower() in _MISSING else text)
    return out


def text_strings(values) -> list[str | None]:
    """Texts as strings; None for missing or whitespace-only cells."""
    out: list[str | None] = []
    for value in values:
        text = None if is_missing(value) else str(value)
        out.append(text if text is not None and text.strip() else None)
    return out


def sort_labels(labels) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    labels = set(labels)
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in rows[:10])
    return shown + (", ..." if len(rows) > 10 else "")


def drop_or_refuse(bad: list[int], n_rows: int, what: str, column: str, source: str) -> str | None:
    """Rows with an empty `what` (label, text...): under 1% of the file they are dropped with a
    warning (a stray blank row should not block a job); more is refused, naming the rows."""
    if not bad:
        return None
    where = f"in column '{column}' of '{source}' (rows {rows_text(bad)}; {ROW_NUMBERS})"
    if len(bad) * 100 < n_rows:
        return f"Dropped {len(bad)} of {n_rows} rows with an empty {what} {where}."
    raise DataError(
        f"{len(bad)} of {n_rows} rows have an empty {what} {where}. "
        f"Remove or fill these rows, or choose another {what} column."
    )


def template_fields(template: str, columns: list[str], source: str) -> list[str]:
    """The column names a "{text}"-style template uses; raises for bad or unknown fields.

    Only plain `{column}` placeholders pass (see ia3engine.data.templates): a format spec such as
    `{text:>2000000}` would make every row megabytes long."""
    example = "like 'Review: {text}'"
    problem = template_problem(template)
    if problem:
        raise DataError(problem)
    fields = template_names(template)
    if not fields:
        raise DataError(
            f"The template {template!r} uses no column. Put a column name in braces, {example}."
        )
    for name in fields:
        if name not in columns:
            label = f"'{name}'" if name else "'{}' (an empty field)"
            raise DataError(
                f"The template uses column {label}, which is not in '{source}'; columns are: "
                f"{', '.join(columns)}.{suggest_column(name, columns) if name else ''} "
                f"Use column names in braces, {example}."
            )
    return fields


def render_template(template: str, frame: pd.DataFrame, fields: list[str]) -> list[str]:
    """Apply the template to every row; missing cells render as empty text."""
    cells = {f: ["" if is_missing(v) else v for v in frame[f]] for f in fields}
    try:
        return [template.format_map({f: cells[f][i] for f in fields}) for i in range(len(frame))]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise DataError(
            f"The template {template!r} could not be applied ({err}). Use plain column names "
            "in braces, like 'Review: {text}', without format specifications."
        ) from None


def template_empty(frame: pd.DataFrame, fields: list[str]) -> list[bool]:
    """Rows where every column the template uses is empty: the rendered text says nothing."""
    columns = [text_strings(frame[f]) for f in fields]
    return [all(v is None for v in row) for row in zip(*columns, strict=True)]
