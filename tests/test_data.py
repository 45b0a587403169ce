"""The dataset layer: every format loads, every bad file gets a message naming problem and fix,
splits are stratified and seeded, templates apply, long rows are cut, samples never drift."""

import codecs
import importlib.util
import json
import zipfile
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
import pytest
from transformers import AutoTokenizer

from ia3engine.data.dataset import inspect_dataset, prepare_dataset
from ia3engine.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    ("I loved every minute of it", "positive"),
    ("Terrible, would not buy again", "negative"),
    ("Great value and fast delivery", "positive"),
    ("It broke after two days", "negative"),
    ("Works exactly as described", "positive"),
    ("Not worth the money at all", "negative"),
]


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def csv_text(rows=ROWS, sep=","):
    """A text,label table; cells holding the separator are quoted."""
    return pd.DataFrame(rows, columns=["text", "label"]).to_csv(index=False, sep=sep)


quoted_csv = csv_text


@pytest.fixture
def sentiment_csv(tmp_path):
    return write(tmp_path / "reviews.csv", quoted_csv(ROWS))


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# ---- formats -----------------------------------------------------------------------------


def _records():
    return [{"text": t, "label": lab} for t, lab in ROWS]


FORMATS = {
    "data.csv": lambda p: write(p, quoted_csv(ROWS)),
    "data.tsv": lambda p: write(p, csv_text(sep="\t")),
    "data.json": lambda p: write(p, json.dumps(_records())),
    "data.jsonl": lambda p: write(p, "".join(json.dumps(r) + "\n" for r in _records())),
    "data.parquet": lambda p: pd.DataFrame(_records()).to_parquet(p),
    "semicolons.csv": lambda p: write(p, csv_text(sep=";")),
    "lines-in.json": lambda p: write(p, "".join(json.dumps(r) + "\n" for r in _records())),
    "columns.json": lambda p: write(
        p, json.dumps({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS]})
    ),
    "no_extension": lambda p: write(p, json.dumps(_records())),
    "bom.csv": lambda p: write(p, codecs.BOM_UTF8 + quoted_csv(ROWS).encode()),
    "utf16.csv": lambda p: write(p, quoted_csv(ROWS).encode("utf-16")),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_loads_with_guessed_columns(tmp_path, name):
    path = tmp_path / name
    FORMATS[name](path)
    summary = inspect_dataset(path)
    assert summary.n_rows == 6
    assert (summary.text_column, summary.label_column) == ("text", "label")
    assert summary.class_counts == {"negative": 3, "positive": 3}
    assert summary.preview[0] == {"text": ROWS[0][0], "label": "positive"}
    data = prepare_dataset(path, val_fraction=1 / 3)
    assert data.labels == ["negative", "positive"]
    assert len(data.train) + len(data.eval) == 6


def test_format_is_reported_from_extension_and_content(tmp_path):
    FORMATS["data.parquet"](tmp_path / "renamed.csv")
    assert inspect_dataset(tmp_path / "renamed.csv").format == "parquet"
    FORMATS["no_extension"](tmp_path / "records")
    assert inspect_dataset(tmp_path / "records").format == "json"
    assert inspect_dataset(write(tmp_path / "a.tsv", csv_text(sep="\t"))).format == "tsv"


def test_plain_text_trains_generate_with_one_response_per_line(tmp_path):
    path = write(tmp_path / "poems.txt", "roses are red\n\nviolets are blue\nsugar is sweet\n")
    summary = inspect_dataset(path, task="generate")
    assert summary.n_rows == 3 and summary.label_column == "text"
    data = prepare_dataset(path, task="generate", val_fraction=0.34)
    rows = list(data.train) + list(data.eval)
    assert sorted(r["response"] for r in rows) == [
        "roses are red",
        "sugar is sweet",
        "violets are blue",
    ]
    assert {r["prompt"] for r in rows} == {""}


def test_plain_text_for_classify_is_refused_with_the_fix(tmp_path):
    message = error_of(inspect_dataset, write(tmp_path / "x.txt", "a\nb\n"))
    assert "plain text" in message and "label column" in message and "CSV" in message


def test_hub_id_offline_says_it_could_not_be_reached_and_to_upload(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_of(prepare_dataset, "stanfordnlp/imdb")
    assert "could not be reached" in message and "offline" in message
    assert "upload the data as a CSV" in message


def test_hub_id_online_loads_train_and_validation_with_label_names(monkeypatch):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    split = lambda rows: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": [t for t, _ in rows], "label": [int(lab == "positive") for _, lab in rows]},
        features=features,
    )
    loaded = datasets.DatasetDict({"train": split(ROWS), "validation": split(ROWS[:2])})
    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda name: calls.append(name) or loaded)
    data = prepare_dataset("someone/reviews")
    assert calls == ["someone/reviews"]
    assert data.labels == ["neg", "pos"] and data.text_column == "sentence"
    assert len(data.train) == 6 and list(data.eval["label"]) == [1, 0]
    assert inspect_dataset("someone/reviews").format == "hub"


# ---- column guessing -------------------------------------------------------------------


def test_guesses_longest_text_column_and_few_valued_label(tmp_path):
    frame = pd.DataFrame(
        {
            "id": range(6),
            "title": ["short"] * 6,
            "review": [t for t, _ in ROWS],
            "sentiment": [lab for _, lab in ROWS],
            "stars": [5, 1, 4, 2, 5, 1],
        }
    )
    summary = inspect_dataset(write(tmp_path / "r.csv", frame.to_csv(index=False)))
    assert (summary.text_column, summary.label_column) == ("review", "sentiment")


def test_unnamed_few_valued_column_is_guessed_as_label_even_beside_list_cells(tmp_path):
    records = [{"body": t, "tokens": t.split(), "mood": lab} for t, lab in ROWS]
    summary = inspect_dataset(write(tmp_path / "r.json", json.dumps(records)))
    assert (summary.text_column, summary.label_column) == ("body", "mood")
    assert summary.preview[0]["tokens"] == ROWS[0][0].split()


def test_caller_columns_win_over_guesses(tmp_path):
    frame = pd.DataFrame(
        {"text": [t for t, _ in ROWS], "label": list("abcabc"), "stars": [5, 1, 5, 1, 5, 1]}
    )
    path = write(tmp_path / "r.csv", frame.to_csv(index=False))
    summary = inspect_dataset(path, label_column="stars")
    assert summary.label_column == "stars" and summary.labels == ["1", "5"]


def test_generate_guesses_prompt_and_response(tmp_path):
    records = [{"id": i, "instruction": f"Uppercase: w{i}", "output": f"W{i}"} for i in range(4)]
    path = write(tmp_path / "i.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = inspect_dataset(path, task="generate")
    assert (summary.text_column, summary.label_column) == ("instruction", "output")
    assert summary.labels == [] and summary.class_counts == {}


def test_integer_labels_become_strings_in_numeric_order(tmp_path):
    frame = pd.DataFrame({"text": [f"example {i}" for i in range(8)], "label": [10, 2] * 4})
    frame.to_parquet(tmp_path / "n.parquet")
    data = prepare_dataset(tmp_path / "n.parquet", val_fraction=0.25)
    assert data.labels == ["2", "10"]
    assert inspect_dataset(tmp_path / "n.parquet").class_counts == {"2": 4, "10": 4}


# ---- errors: each names the problem and the fix ---------------------------------------------


def test_missing_file(tmp_path):
    message = error_of(prepare_dataset, tmp_path / "nope.csv")
    assert "nope.csv' was not found" in message and "Check the path" in message


def test_empty_file(tmp_path):
    message = error_of(prepare_dataset, write(tmp_path / "e.csv", "  \n"))
    assert "is empty" in message and "header row" in message


def test_header_without_rows(tmp_path):
    message = error_of(prepare_dataset, write(tmp_path / "h.csv", "text,label\n"))
    assert "no rows" in message and "Add one row per example" in message


BINARIES = {
    "PNG image": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "ZIP archive": None,  # built below
    "Excel workbook": None,
    "NUL bytes": b"text,label\x00\x00\x01\x02",
}


@pytest.mark.parametrize("kind", sorted(BINARIES))
def test_binary_file_renamed_csv_is_refused(tmp_path, kind):
    path = tmp_path / "data.csv"
    if kind in ("ZIP archive", "Excel workbook"):
        inner = "[Content_Types].xml" if kind == "Excel workbook" else "reviews.csv"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(inner, "text,label\n")
    else:
        write(path, BINARIES[kind])
    message = error_of(inspect_dataset, path)
    assert "not a text table" in message and kind in message
    assert "Upload a CSV, TSV, JSON, JSONL, Parquet or TXT file" in message


def test_parquet_extension_on_a_text_file_is_refused(tmp_path):
    message = error_of(prepare_dataset, write(tmp_path / "d.parquet", quoted_csv(ROWS)))
    assert "not a Parquet file" in message and "Export it again as Parquet" in message


def test_windows_1252_file_is_read_with_a_warning(tmp_path):
    rows = [("Café très bon", "positive"), ("Déçu, trop cher", "negative")] * 3
    path = write(tmp_path / "fr.csv", quoted_csv(rows).encode("cp1252"))
    summary = inspect_dataset(path)
    assert summary.preview[0]["text"] == "Café très bon"
    assert any("Windows-1252" in w and "re-save the file as UTF-8" in w for w in summary.warnings)
    assert prepare_dataset(path, val_fraction=1 / 3).warnings == summary.warnings


def test_non_latin_legacy_encoding_is_refused_with_resave_advice(tmp_path):
    rows = [("Отличный товар, всем советую", "positive"), ("Ужасно, не покупайте", "negative")]
    path = write(tmp_path / "ru.csv", quoted_csv(rows * 3).encode("cp1251"))
    message = error_of(prepare_dataset, path)
    assert "is not UTF-8 text" in message and "Re-save it as UTF-8" in message


def test_misspelt_column_suggests_the_closest_name(sentiment_csv):
    message = error_of(prepare_dataset, sentiment_csv, label_column="labl")
    assert message.startswith("Column 'labl' not found in")
    assert "columns are: text, label. Did you mean 'label'?" in message
    assert "Choose the label column in the mapping." in message
    assert "Did you mean 'text'?" in error_of(inspect_dataset, sentiment_csv, text_column="Text")


def test_unparseable_csv_row_says_to_quote(tmp_path):
    path = write(tmp_path / "bad.csv", "text,label\nfine,positive\nbad, really,negative,x\n")
    message = error_of(prepare_dataset, path)
    assert "not a well-formed table" in message and "Put quotes around texts" in message


def test_broken_jsonl_line_is_named(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", \n')
    message = error_of(prepare_dataset, path)
    assert "Line 2" in message and "one JSON object per line" in message


def test_single_class_is_refused(tmp_path):
    path = write(tmp_path / "one.csv", csv_text([(t, "positive") for t, _ in ROWS]))
    message = error_of(prepare_dataset, path)
    assert "single class ('positive')" in message and "Add examples of the other classes" in message
    assert any("single class" in w for w in inspect_dataset(path).warnings)


def test_many_empty_labels_are_refused_naming_count_and_rows(tmp_path):
    rows = list(ROWS) * 3
    rows[2], rows[7] = (rows[2][0], ""), (rows[7][0], "NaN")
    path = write(tmp_path / "nan.csv", csv_text(rows))
    message = error_of(prepare_dataset, path)
    assert "2 of 18 rows have an empty label in column 'label'" in message
    assert "rows 3, 8" in message and "Remove or fill these rows" in message
    summary = inspect_dataset(path)  # the preview still opens, with the problem as a warning
    assert summary.preview[2]["label"] is None and message in summary.warnings


def test_rare_empty_labels_are_dropped_with_a_warning(tmp_path):
    rows = [(f"{t} ({i})", lab) for i in range(20) for t, lab in ROWS]  # 120 rows
    rows[5] = (rows[5][0], "")
    data = prepare_dataset(write(tmp_path / "nan.csv", csv_text(rows)), val_fraction=0.1)
    assert len(data.train) + len(data.eval) == 119
    assert any(w.startswith("Dropped 1 of 120 rows with an empty label") for w in data.warnings)


def test_empty_texts_are_refused(tmp_path):
    rows = list(ROWS)
    rows[1] = ("   ", "negative")
    message = error_of(prepare_dataset, write(tmp_path / "t.csv", quoted_csv(rows)))
    assert "empty text in column 'text'" in message and "Remove or fill these rows" in message


def test_eval_label_never_seen_in_training_is_named(tmp_path, sentiment_csv):
    evaluation = write(tmp_path / "eval.csv", csv_text([("so-so", "neutral"), ("ok", "positive")]))
    message = error_of(prepare_dataset, sentiment_csv, eval_path=evaluation)
    assert "'neutral' never seen in training" in message
    assert "Add training examples of those labels, or remove those rows" in message


def test_eval_file_without_the_training_columns(tmp_path, sentiment_csv):
    evaluation = write(tmp_path / "eval.csv", "sentence,label\nok,positive\n")
    message = error_of(prepare_dataset, sentiment_csv, eval_path=evaluation)
    assert "Column 'text' not found in" in message and "same column names" in message


def test_more_rows_than_the_cap_names_cap_and_setting(sentiment_csv):
    message = error_of(prepare_dataset, sentiment_csv, max_rows=5)
    assert "more rows than the cap of 5 rows" in message and "Raise the max_rows" in message
    assert "cap of 5" in error_of(inspect_dataset, sentiment_csv, max_rows=5)


def _broken_after(count: int, good: str, broken: str) -> str:
    """`count` good lines, then a line no reader accepts: only a reader that stops at the cap
    answers with the cap instead of the broken line."""
    return "\n".join([good] * count + [broken] * 3) + "\n"


@pytest.mark.parametrize(
    ("name", "header", "good", "broken"),
    [
        ("rows.csv", "text,label\n", "a fine film,positive", '"never closed,quote,x,y,z'),
        ("rows.jsonl", "", '{"text": "a fine film", "label": "positive"}', "{not json"),
    ],
)
def test_the_row_cap_stops_reading_before_the_rest_of_the_file(
    tmp_path, name, header, good, broken
):
    path = write(tmp_path / name, header + _broken_after(20, good, broken))
    assert "more rows than the cap of 5 rows" in error_of(inspect_dataset, path, max_rows=5)
    assert "cap" not in error_of(inspect_dataset, path, max_rows=None)  # read whole: it is broken


def test_a_parquet_file_over_the_cap_is_refused_from_its_footer(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"text": ["a fine film"] * 40, "label": ["positive"] * 40}).to_parquet(path)

    def never_read(*args, **kwargs):
        raise AssertionError("the rows were read")

    monkeypatch.setattr(pq.ParquetFile, "read", never_read)
    assert "40 rows, more than the cap of 5 rows" in error_of(inspect_dataset, path, max_rows=5)


def test_json_records_over_the_cap_are_refused(tmp_path):
    records = [{"text": "a fine film", "label": "positive"}] * 30
    path = write(tmp_path / "rows.json", json.dumps(records))
    assert "more rows than the cap of 5 rows" in error_of(inspect_dataset, path, max_rows=5)


def test_too_few_rows_to_split_says_how_many_are_needed(tmp_path):
    rows = ROWS[:4] + [("meh", "neutral")]
    message = error_of(prepare_dataset, write(tmp_path / "few.csv", csv_text(rows)))
    assert "class 'neutral' has only 1 row" in message
    assert "at least 6 rows for 3 classes" in message and "separate eval file" in message


def test_errors_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    write(tmp_path / "one.csv", csv_text([("a", "x"), ("b", "x")]))
    error_of(prepare_dataset, "one.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv"]


def test_unguessable_label_column_asks_for_a_choice(tmp_path):
    frame = pd.DataFrame(
        {"a": [f"first text {i}" for i in range(30)], "b": [f"second text {i}" for i in range(30)]}
    )
    path = write(tmp_path / "u.csv", frame.to_csv(index=False))
    message = error_of(prepare_dataset, path)
    assert "Could not tell which column holds the label" in message
    assert "columns are: a, b" in message and "Choose the label column" in message
    assert inspect_dataset(path).warnings == [message]
    assert prepare_dataset(path, task="generate", text_column="a", label_column="b").train


@pytest.mark.parametrize(
    "options, words",
    [
        ({"task": "summarise"}, ["Unknown task 'summarise'", "classify, generate"]),
        ({"val_fraction": 1.5}, ["val_fraction=1.5 is out of range", "e.g. 0.1"]),
        ({"max_rows": 0}, ["max_rows=0", "positive whole number"]),
        ({"text_column": "text", "label_column": "text"}, ["both 'text'", "two different"]),
    ],
)
def test_bad_options_are_refused(sentiment_csv, options, words):
    message = error_of(prepare_dataset, sentiment_csv, **options)
    assert all(w in message for w in words), message


def test_empty_generate_responses_warn_in_preview_and_refuse_in_prepare(tmp_path):
    records = [{"prompt": f"p{i}", "response": "" if i < 2 else f"r{i}"} for i in range(6)]
    path = write(tmp_path / "g.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    message = error_of(prepare_dataset, path, task="generate")
    assert "2 of 6 rows have an empty response" in message and "rows 1, 2" in message
    assert inspect_dataset(path, task="generate").warnings == [message]


# ---- splits ----------------------------------------------------------------------------------


def _imbalanced(tmp_path) -> Path:
    rows = [(f"good thing {i}", "positive") for i in range(80)]
    rows += [(f"bad thing {i}", "negative") for i in range(20)]
    return write(tmp_path / "imb.csv", csv_text(rows))


def test_stratified_split_keeps_class_proportions(tmp_path):
    data = prepare_dataset(_imbalanced(tmp_path), val_fraction=0.25)
    names = data.labels
    assert Counter(names[i] for i in data.eval["label"]) == {"positive": 20, "negative": 5}
    assert Counter(names[i] for i in data.train["label"]) == {"positive": 60, "negative": 15}
    assert not set(data.train["text"]) & set(data.eval["text"])


def test_split_is_deterministic_for_a_seed(tmp_path):
    path = _imbalanced(tmp_path)
    first, again = (prepare_dataset(path, seed=3) for _ in range(2))
    other = prepare_dataset(path, seed=4)
    assert first.eval["text"] == again.eval["text"] and first.train["text"] == again.train["text"]
    assert other.eval["text"] != first.eval["text"]
    assert first.fingerprint == again.fingerprint != other.fingerprint


def test_every_class_keeps_a_training_row(tmp_path):
    rows = [(f"common {i}", "a") for i in range(30)] + [("rare one", "b"), ("rare two", "b")]
    data = prepare_dataset(write(tmp_path / "r.csv", csv_text(rows)), val_fraction=0.5)
    assert Counter(data.train["label"])[data.labels.index("b")] == 1
    assert any("imbalanced" in w and "'b' has 2 rows" in w for w in data.warnings)


def test_eval_file_is_used_instead_of_a_split(tmp_path, sentiment_csv):
    evaluation = write(tmp_path / "eval.csv", csv_text([("fine", "positive"), ("bad", "negative")]))
    data = prepare_dataset(sentiment_csv, eval_path=evaluation)
    assert len(data.train) == 6 and data.eval["text"] == ["fine", "bad"]
    assert data.eval["label"] == [1, 0]


# ---- templates -----------------------------------------------------------------------------


def test_classify_template_fills_columns(sentiment_csv):
    data = prepare_dataset(sentiment_csv, template="Review: {text}\nSentiment?", val_fraction=0.34)
    assert all(t.startswith("Review: ") and t.endswith("\nSentiment?") for t in data.train["text"])


def test_generate_template_builds_the_prompt_and_default_is_the_column(tmp_path):
    records = [
        {"instruction": f"Reverse: {a} {b}", "input": "x", "output": f"{b} {a}"}
        for a, b in [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]
    ]
    path = write(tmp_path / "g.json", json.dumps(records))
    plain = prepare_dataset(path, task="generate", val_fraction=0.25)
    assert set(plain.train["prompt"]) <= {r["instruction"] for r in records}
    assert any("Column 'input' is not used" in w for w in plain.warnings)
    templated = prepare_dataset(path, task="generate", template="Q: {instruction} ({input})")
    assert templated.eval["prompt"][0].startswith("Q: Reverse: ")
    assert templated.eval["prompt"][0].endswith(" (x)")
    assert templated.label_column == "output"


def test_template_with_unknown_field_lists_columns(sentiment_csv):
    message = error_of(prepare_dataset, sentiment_csv, template="Review: {txt}")
    assert "column 'txt', which is not in" in message and "columns are: text, label" in message
    assert "Did you mean 'text'?" in message


def test_template_showing_the_answer_or_malformed_is_refused(sentiment_csv):
    leak = error_of(prepare_dataset, sentiment_csv, template="{text} => {label}")
    assert "would see the answer" in leak and "Remove '{label}'" in leak
    broken = error_of(prepare_dataset, sentiment_csv, template="Review: {text")
    assert "malformed" in broken and "double a brace" in broken


@pytest.mark.parametrize("slot", ["{text:>2000000}", "{text!s}", "{text.upper}", "{text[0]}"])
def test_template_with_a_format_spec_or_attribute_access_is_refused(sentiment_csv, slot):
    message = error_of(prepare_dataset, sentiment_csv, template=f"Review: {slot}")
    assert slot in message and "only plain column names in braces" in message


# ---- truncation -------------------------------------------------------------------------------


def test_long_rows_are_truncated_and_counted(tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    long = " ".join(["wonderful"] * 40)
    rows = [(long, "positive"), (long + " indeed", "negative")] + list(ROWS)
    path = write(tmp_path / "long.csv", csv_text(rows))
    data = prepare_dataset(path, tokenizer=tokenizer, max_length=16, val_fraction=0.25)
    assert data.n_truncated == 2
    assert "2 rows were longer than 16 tokens and were truncated" in data.warnings
    texts = list(data.train["text"]) + list(data.eval["text"])
    assert max(len(tokenizer(t)["input_ids"]) for t in texts) == 16
    assert " ".join(["wonderful"] * 14) in texts  # cut at a token boundary of the original
    pairs = write(tmp_path / "p.jsonl", json.dumps({"prompt": long, "response": long}) + "\n")
    generated = prepare_dataset(
        pairs, eval_path=pairs, task="generate", tokenizer=tokenizer, max_length=16
    )
    row = generated.train[0]
    assert generated.n_truncated == 2
    assert len(tokenizer(row["prompt"] + " " + row["response"])["input_ids"]) <= 16


# ---- sample datasets ---------------------------------------------------------------------------


def _make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples/make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_samples_equal_what_the_script_writes():
    rendered = _make_samples().render_samples()
    for name, content in rendered.items():
        assert (ROOT / "examples/data" / name).read_bytes() == content.encode("utf-8"), name


@pytest.mark.parametrize(
    "name, task, columns, n_labels",
    [
        ("sentiment_train.csv", "classify", ("text", "label"), 2),
        ("sentiment_eval.csv", "classify", ("text", "label"), 2),
        ("intent_train.csv", "classify", ("text", "label"), 6),
        ("intent_eval.csv", "classify", ("text", "label"), 6),
        ("instructions.jsonl", "generate", ("instruction", "response"), 0),
    ],
)
def test_samples_are_guessed_right_and_balanced(name, task, columns, n_labels):
    summary = inspect_dataset(ROOT / "examples/data" / name, task=task)
    assert (summary.text_column, summary.label_column) == columns
    assert len(summary.labels) == n_labels and summary.warnings == []
    assert len(set(summary.class_counts.values())) <= 1


def test_sample_train_and_eval_sets_do_not_overlap():
    for stem in ("sentiment", "intent"):
        data = prepare_dataset(
            ROOT / f"examples/data/{stem}_train.csv",
            eval_path=ROOT / f"examples/data/{stem}_eval.csv",
        )
        assert len(data.train) >= 300 and len(data.eval) >= 100
        assert not set(data.train["text"]) & set(data.eval["text"])
