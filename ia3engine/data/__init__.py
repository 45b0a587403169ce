"""The data pipeline: dataset files -> validated, mapped, split examples.

read (formats, encodings, row cap) -> columns (guessing, cleaning, templates) -> examples
(empty rows, label sets, eval file or split) -> split (seeded stratified split, truncation);
dataset.py joins them as `inspect_dataset` and `prepare_dataset`. Knows nothing of models.
This face imports nothing, so `ia3engine.data.templates` stays light (no pandas, no datasets).
"""
