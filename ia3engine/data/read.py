"""Reading a dataset file (or a Hub dataset id) into a pandas table, refusing bad files clearly.

Owns format detection (extension, then sniffed bytes), text decoding, binary detection and the row cap.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd
import pyarrow.parquet as pq

from ia3engine.errors import DataError

logger = logging.getLogger(__name__)

SUPPORTED = "CSV, TSV, JSON, JSONL, Parquet or TXT"
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
# Leading bytes of files people upload by mistake; named so the message can say what it is.
_MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or other Office file"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SAVE_AS_UTF8 = (
    "Re-save it as UTF-8 (in Excel: Save As > 'CSV UTF-8'; in an editor: encoding UTF-8)."
)


@dataclass
class Table:
    """One loaded table: its rows, detected format, a digest of its source, and load warnings."""

    frame: pd.DataFrame
    format: str
    digest: str
    warnings: list[str] = field(default_factory=list)
    eval_frame: pd.DataFrame | None = None  # a Hub dataset's own "validation" split


def read_table(path, *, max_rows: int | None = None, role: str = "data") -> Table:
    """Load `path` (a file, or a Hub dataset id when the file does not exist) into a Table.

    `role` ("data" or "eval") only changes the wording of messages. Raises DataError.
    """
    name = str(path)
    file = Path(name)
    role = "" if role == "data" else f"{role} "
    if file.is_dir():
        raise DataError(
            f"The {role}path '{name}' is a folder, not a file. Choose one {SUPPORTED} file."
        )
    if not file.exists():
        if file.suffix.lower() not in EXTENSIONS and _HUB_ID.match(name):
            return _read_hub(name, max_rows, role)
        raise DataError(
            f"The {role}file '{name}' was not found. Check the path, or upload the file again."
        )
    name = file.name  # messages name the file, not the (often temporary) folder it sits in
    data = file.read_bytes()
    if not data.strip():
        raise DataError(
            f"The {role}file '{name}' is empty. Export it again with a header row and "
            "one row per example."
        )
    fmt = sniff_format(file, data)
    # One row past the cap is enough to refuse: a huge file is never parsed whole.
    limit = None if max_rows is None else max_rows + 1
    if fmt == "parquet":
        frame, warnings = _parse_parquet(data, name, limit), []
    else:
        text, warnings = decode_text(data, name)
        frame = _PARSERS[fmt](text, name, limit)
    if len(frame) == 0:
        raise DataError(
            f"The {role}file '{name}' has column names ({', '.join(map(str, frame.columns))}) "
            "but no rows. Add one row per example."
        )
    frame.columns = [str(c) for c in frame.columns]
    check_row_cap(len(frame), max_rows, name, counted=False)
    return Table(frame, fmt, hashlib.sha256(data).hexdigest(), warnings)


def check_row_cap(n_rows: int, max_rows: int | None, name: str, counted: bool = True) -> None:
    """Refuse a table with more rows than the configured cap rather than silently sampling it.

    `counted` False: reading stopped one row past the cap, so the real count is not known.
    """
    if max_rows is not None and n_rows > max_rows:
        size = f"{n_rows:,} rows, more" if counted else "more rows"
        raise DataError(
            f"'{name}' has {size} than the cap of {max_rows:,} rows. "
            "Raise the max_rows setting, or use a smaller sample of the file."
        )


def sniff_format(file: Path, data: bytes) -> str:
    """The format of `data`: binary files are refused, Parquet is known by its magic bytes,
    other files by extension, and files with an unknown extension by their first character."""
    head = data[:65536]
    if head.startswith(b"PAR1"):
        return "parquet"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise DataError(_binary_message(file.name, _excel_hint(head, what)))
    has_bom = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if b"\x00" in head and not has_bom:
        raise DataError(
            _binary_message(file.name, "a binary file (it contains NUL bytes)")
            + " If it is UTF-16 text without a byte-order mark, re-save it as UTF-8."
        )
    fmt = EXTENSIONS.get(file.suffix.lower())
    if fmt == "parquet":
        raise DataError(
            f"'{file.name}' is named .parquet but is not a Parquet file (it does not start "
            "with PAR1). Export it again as Parquet, or rename it to match its real format."
        )
    if fmt is not None:
        return fmt
    first = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return {b"[": "json", b"{": "jsonl"}.get(first, "csv")


def _excel_hint(head: bytes, what: str) -> str:
    if b"[Content_Types].xml" in head or b"xl/" in head:
        return "an Excel workbook (.xlsx); save the sheet as 'CSV UTF-8' and upload that"
    return what


def _binary_message(name: str, what: str) -> str:
    return (
        f"'{name}' is not a text table: it looks like {what}. "
        f"Upload a {SUPPORTED} file with one example per row."
    )


def decode_text(data: bytes, name: str) -> tuple[str, list[str]]:
    """Decode file bytes: UTF-16 with a BOM, UTF-8 (with or without BOM), else Windows-1252.

    Windows-1252 (what Excel writes on Western-European Windows) is accepted with a warning
    when the bytes decode cleanly and look like Latin text; anything else is refused with a
    message on re-saving as UTF-8, because guessing other code pages silently garbles text.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as err:
            raise DataError(
                f"'{name}' is broken UTF-16 text ({err.reason}). {_SAVE_AS_UTF8}"
            ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        text = _decode_legacy(data, name, err)
        return _refuse_control_chars(text, name), [
            f"'{name}' is not UTF-8; it was read as Windows-1252 (Western European). "
            f"If accented letters look wrong, re-save the file as UTF-8."
        ]
    return _refuse_control_chars(text, name), []


def _decode_legacy(data: bytes, name: str, err: UnicodeDecodeError) -> str:
    bad = data[err.start]
    refusal = DataError(
        f"'{name}' is not UTF-8 text (byte 0x{bad:02x} at position {err.start} cannot be "
        f"decoded) and does not look like Western-European Windows-1252 text. {_SAVE_AS_UTF8}"
    )
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise refusal from None
    # Accented Latin letters stand alone between ASCII letters ("café"); Cyrillic, Greek or
    # CJK code pages put non-ASCII bytes in long runs, which cp1252 would turn into mojibake.
    runs = [len(m.group()) for m in re.finditer(rb"[\x80-\xff]+", data)]
    if sum(n for n in runs if n >= 3) * 2 > sum(runs):
        raise refusal
    logger.info("%s is not UTF-8; decoded as cp1252", name)
    return text


def _refuse_control_chars(text: str, name: str) -> str:
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r")
    if controls * 100 > len(sample):
        raise DataError(_binary_message(name, "a binary file (it is full of control characters)"))
    return text


def _parse_delimited(text: str, name: str, default_sep: str, limit: int | None) -> pd.DataFrame:
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    sep = default_sep
    if default_sep not in header:
        # European Excel writes ';' and some tools '|' even in files named .csv.
        counts = {s: header.count(s) for s in (",", ";", "\t", "|")}
        best = max(counts, key=counts.get)
        sep = best if counts[best] else default_sep
    try:
        # dtype=str and only empty cells as missing: a label "None" or "NA" stays a label.
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            nrows=limit,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"'{name}' has no columns. Export it again with a header row.") from None
    except pd.errors.ParserError as err:
        detail = str(err).strip().split("\n")[-1]
        raise DataError(
            f"'{name}' is not a well-formed table ({detail}). Put quotes around texts that "
            f"contain the separator '{sep}', or save the file as JSONL or Parquet instead."
        ) from None


def _parse_csv(text: str, name: str, limit: int | None = None) -> pd.DataFrame:
    return _parse_delimited(text, name, ",", limit)


def _parse_tsv(text: str, name: str, limit: int | None = None) -> pd.DataFrame:
    return _parse_delimited(text, name, "\t", limit)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, line) of `text` one at a time, without splitting the whole text at once."""
    start, number = 0, 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        number += 1
        yield number, text[start:end]
        start = end + 1


def _parse_txt(text: str, name: str, limit: int | None = None) -> pd.DataFrame:
    kept = []
    for _, line in _lines(text):
        if line.strip():
            kept.append(line.rstrip("\r"))
            if limit is not None and len(kept) >= limit:
                break
    return pd.DataFrame({"text": kept}, dtype=object)


def _parse_json(text: str, name: str, limit: int | None = None) -> pd.DataFrame:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several JSON values in a row: it is really JSONL
            return _parse_jsonl(text, name, limit)
        raise DataError(
            f"'{name}' is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}. "
            "Fix the file there, or export it as a list of records or as JSONL."
        ) from None
    return _records_frame(obj, name, limit)


def _parse_jsonl(text: str, name: str, limit: int | None = None) -> pd.DataFrame:
    if text.lstrip("\ufeff \t\r\n").startswith("["):
        return _parse_json(text, name, limit)
    records = []
    for number, line in _lines(text):
        if limit is not None and len(records) >= limit:
            break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"Line {number} of '{name}' is not valid JSON ({err.msg}). JSONL needs one "
                "JSON object per line; fix or remove that line."
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"Line {number} of '{name}' is a {type(record).__name__}, not an object. "
                'Write one object per line, like {"text": "...", "label": "..."}.'
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _records_frame(obj, name: str, limit: int | None = None) -> pd.DataFrame:
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), list):
        obj = next(iter(obj.values()))  # {"data": [...]} wrappers
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        if len({len(v) for v in obj.values()}) == 1:
            return pd.DataFrame({k: v[:limit] for k, v in obj.items()})
    if isinstance(obj, list):
        obj = obj[:limit]  # the table is built from one row past the cap at most
        for number, record in enumerate(obj, start=1):
            if not isinstance(record, dict):
                raise DataError(
                    f"Item {number} of '{name}' is a {type(record).__name__}, not a record. "
                    'Write a list of objects, like [{"text": "...", "label": "..."}].'
                )
        return pd.DataFrame.from_records(obj)
    raise DataError(
        f"'{name}' holds JSON but not a table. Write a list of records, like "
        '[{"text": "...", "label": "..."}], or one record per line (JSONL).'
    )


def _parse_parquet(data: bytes, name: str, limit: int | None = None) -> pd.DataFrame:
    try:
        file = pq.ParquetFile(io.BytesIO(data))
    except Exception as err:  # pyarrow raises many types for a damaged file
        raise _parquet_error(name, err) from None
    # The row count is in the footer: a file over the cap is refused before any row is read.
    check_row_cap(file.metadata.num_rows, None if limit is None else limit - 1, name)
    try:
        return file.read().to_pandas()
    except Exception as err:
        raise _parquet_error(name, err) from None


def _parquet_error(name: str, err: Exception) -> DataError:
    return DataError(
        f"'{name}' could not be read as Parquet ({type(err).__name__}: {err}). "
        "Export it again, or save it as CSV or JSONL."
    )


_PARSERS = {
    "csv": _parse_csv,
    "tsv": _parse_tsv,
    "json": _parse_json,
    "jsonl": _parse_jsonl,
    "txt": _parse_txt,
}


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _read_hub(name: str, max_rows: int | None, role: str) -> Table:
    unreachable = (
        f"There is no {role}file '{name}', and the Hugging Face Hub dataset '{name}' "
        "could not be reached"
    )
    fix = "Check the path or the dataset id, or upload the data as a CSV, JSONL or Parquet file."
    if _offline():
        raise DataError(f"{unreachable} because this machine is offline (HF_HUB_OFFLINE). {fix}")
    try:
        loaded = datasets.load_dataset(name)
    except Exception as err:  # network, auth, missing repo: all mean "not reachable" here
        raise DataError(f"{unreachable} ({type(err).__name__}: {err}). {fix}") from None
    train, evaluation = loaded, None
    if isinstance(loaded, datasets.DatasetDict):
        train = loaded["train"] if "train" in loaded else loaded[next(iter(loaded))]
        evaluation = loaded["validation"] if "validation" in loaded else None
    check_row_cap(train.num_rows, max_rows, name)
    digest = hashlib.sha256(name.encode())
    for split in (train, evaluation):
        digest.update(str(getattr(split, "_fingerprint", "")).encode())
    eval_frame = None if evaluation is None else _hub_frame(evaluation)
    return Table(_hub_frame(train), "hub", digest.hexdigest(), [], eval_frame)


def _hub_frame(split) -> pd.DataFrame:
    """A Hub split as a table, with class-label ids turned back into their names."""
    frame = split.to_pandas()
    for column, feature in split.features.items():
        if isinstance(feature, datasets.ClassLabel):
            frame[column] = [
                feature.int2str(int(v)) if pd.notna(v) and int(v) >= 0 else None
                for v in frame[column]
            ]
    return frame
