"""Turning a mapped table into examples: dropping or refusing empty rows, checking the label
set, and choosing the validation rows (eval file, Hub split, or a seeded split)."""

from __future__ import annotations

from collections import Counter

from ia3engine.data.columns import (
    drop_or_refuse,
    label_strings,
    render_template,
    require_column,
    sort_labels,
    template_empty,
    template_fields,
    text_strings,
)
from ia3engine.data.split import (
    AUTO_VAL_MIN_ROWS,
    auto_val_fraction,
    random_split,
    stratified_split,
)
from ia3engine.errors import DataError

NO_VALIDATION = "No validation set (val_fraction=0 and no eval file): no metrics."
ALL_ROWS_TRAIN = (
    "All {n} rows train the adapter and none are held back for validation: with no eval file, "
    "a validation split of fewer than {min_rows} rows could not tell a good run from a bad one. "
    "To see accuracy, add an eval file (or set a validation share)."
)


def validation_share(val_fraction: float | None, n_rows: int) -> tuple[float, list[str]]:
    """The share to hold back (None = decided by the row count) and the note that explains a
    decision to hold back nothing."""
    if val_fraction is None:
        share = auto_val_fraction(n_rows)
        if share == 0:
            return 0.0, [ALL_ROWS_TRAIN.format(n=n_rows, min_rows=AUTO_VAL_MIN_ROWS)]
        return share, []
    return val_fraction, [NO_VALIDATION] if val_fraction == 0 else []


def classify_examples(frame, text, label, template, source):
    """(texts, labels, warnings) of the usable rows; rows with an empty text or label are
    dropped with a warning when rare, refused otherwise."""
    labels = label_strings(frame[label])
    if template is not None:
        fields = _template_fields(template, frame, label, source)
        texts = render_template(template, frame, fields)
        empty, text_name = template_empty(frame, fields), "/".join(fields)
    else:
        raw = text_strings(frame[text])
        texts, empty, text_name = raw, [t is None for t in raw], text
    n = len(frame)
    notes = [
        drop_or_refuse([i for i, v in enumerate(labels) if v is None], n, "label", label, source),
        drop_or_refuse([i for i, e in enumerate(empty) if e], n, "text", text_name, source),
    ]
    keep = [i for i in range(n) if labels[i] is not None and not empty[i]]
    return [texts[i] for i in keep], [labels[i] for i in keep], [w for w in notes if w]


def _template_fields(template, frame, answer_column, source) -> list[str]:
    fields = template_fields(template, list(frame.columns), source)
    if answer_column in fields:
        raise DataError(
            f"The template uses '{{{answer_column}}}', the column the model must learn to "
            f"answer, so it would see the answer. Remove '{{{answer_column}}}' from the template."
        )
    return fields


def check_label_set(labels, column, source) -> tuple[list[str], list[str]]:
    """The sorted label names, and a warning when the classes are imbalanced."""
    counts = Counter(v for v in labels if v is not None)
    names = sort_labels(counts)
    if len(names) < 2:
        only = f" ('{names[0]}')" if names else ""
        raise DataError(
            f"Column '{column}' of '{source}' holds a single class{only}; classification needs "
            "at least two. Add examples of the other classes, or choose another label column."
        )
    if len(names) > 20 and len(names) * 2 > len(labels):
        raise DataError(
            f"Column '{column}' of '{source}' has {len(names)} different values in "
            f"{len(labels)} rows, so it does not look like a label column. Choose the column "
            "that holds the class of each row."
        )
    small, large = min(names, key=counts.get), max(names, key=counts.get)
    if counts[small] * 5 < counts[large]:
        return names, [
            f"The classes are imbalanced: '{small}' has {counts[small]} rows and '{large}' has "
            f"{counts[large]}. Add examples of the small classes if you can; accuracy alone "
            "can hide poor results on them."
        ]
    return names, []


def classify_splits(frame, eval_frame, text, label, template, sources, val_fraction, seed):
    """(train, eval, label names, warnings): columns text and label id; the eval rows come
    from `eval_frame` when given, else from a stratified split of `frame`."""
    texts, labels, notes = classify_examples(frame, text, label, template, sources[0])
    names, balance = check_label_set(labels, label, sources[0])
    notes += balance
    if eval_frame is not None:
        _require_in_eval(eval_frame, [label] + ([text] if template is None else []), sources[1])
        eval_texts, eval_labels, more = classify_examples(
            eval_frame, text, label, template, sources[1]
        )
        unseen = sorted(set(eval_labels) - set(names))
        if unseen:
            raise DataError(
                f"The eval file '{sources[1]}' has label(s) {', '.join(map(repr, unseen))} "
                f"never seen in training (training labels: {', '.join(names)}). Add training "
                "examples of those labels, or remove those rows from the eval file."
            )
        train, evaluation = (texts, labels), (eval_texts, eval_labels)
        notes += more
    else:
        share, more = validation_share(val_fraction, len(texts))
        notes += more
        if share > 0:
            kept, held = stratified_split(labels, share, seed)
            train = ([texts[i] for i in kept], [labels[i] for i in kept])
            evaluation = ([texts[i] for i in held], [labels[i] for i in held])
        else:
            train, evaluation = (texts, labels), ([], [])
    ids = {name: i for i, name in enumerate(names)}

    def as_columns(part):
        return {"text": part[0], "label": [ids[v] for v in part[1]]}

    return as_columns(train), as_columns(evaluation), names, notes


def generate_examples(frame, prompt, response, template, source):
    """(prompts, responses, warnings) of the usable rows."""
    n = len(frame)
    responses = text_strings(frame[response])
    notes = []
    if template is not None:
        fields = _template_fields(template, frame, response, source)
        prompts = render_template(template, frame, fields)
        empty, prompt_name = template_empty(frame, fields), "/".join(fields)
    elif prompt is not None:
        prompts = text_strings(frame[prompt])
        empty, prompt_name = [p is None for p in prompts], prompt
        unused = [c for c in ("input", "context") if c in frame.columns and c != prompt]
        if unused and prompt == "instruction":
            notes.append(
                f"Column '{unused[0]}' is not used. To include it, set a template such as "
                f"'{{instruction}}\\n{{{unused[0]}}}'."
            )
    else:
        prompts, empty, prompt_name = [""] * n, [False] * n, None
    notes.append(
        drop_or_refuse(
            [i for i, r in enumerate(responses) if r is None], n, "response", response, source
        )
    )
    if prompt_name is not None:
        notes.append(
            drop_or_refuse([i for i, e in enumerate(empty) if e], n, "prompt", prompt_name, source)
        )
    keep = [i for i in range(n) if responses[i] is not None and not empty[i]]
    return [prompts[i] for i in keep], [responses[i] for i in keep], [w for w in notes if w]


def generate_splits(frame, eval_frame, prompt, response, template, sources, val_fraction, seed):
    """(train, eval, [], warnings): columns prompt and response."""
    prompts, responses, notes = generate_examples(frame, prompt, response, template, sources[0])
    if eval_frame is not None:
        needed = [response] + ([prompt] if template is None and prompt is not None else [])
        _require_in_eval(eval_frame, needed, sources[1])
        eval_prompts, eval_responses, more = generate_examples(
            eval_frame, prompt, response, template, sources[1]
        )
        notes += more
        train = {"prompt": prompts, "response": responses}
        evaluation = {"prompt": eval_prompts, "response": eval_responses}
        return train, evaluation, [], notes
    share, more = validation_share(val_fraction, len(prompts))
    notes += more
    if share > 0:
        kept, held = random_split(len(prompts), share, seed)
    else:
        kept, held = list(range(len(prompts))), []
    train = {"prompt": [prompts[i] for i in kept], "response": [responses[i] for i in kept]}
    evaluation = {"prompt": [prompts[i] for i in held], "response": [responses[i] for i in held]}
    return train, evaluation, [], notes


def _require_in_eval(frame, columns, source) -> None:
    for column in columns:
        require_column(
            column,
            list(frame.columns),
            "",
            source,
            fix="Give the eval file the same column names as the training file.",
        )
