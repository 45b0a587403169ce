"""The data pipeline: dataset files -> validated, mapped, split examples.

read (formats, encodings, row cap) -> columns (guessing, cleaning, templates) -> examples
(empty rows, label sets, eval file or split) -> split (seeded stratified split, truncation);
dataset.py joins them as `inspect_dataset` and `prepare_dataset`. Knows nothing of models.
"""

from ia3engine.data.dataset import (
    PREVIEW_ROWS,
    TASKS,
    DatasetSummary,
    PreparedData,
    display_name,
    inspect_dataset,
    prepare_dataset,
)

__all__ = [
    "PREVIEW_ROWS",
    "TASKS",
    "DatasetSummary",
    "PreparedData",
    "display_name",
    "inspect_dataset",
    "prepare_dataset",
]
