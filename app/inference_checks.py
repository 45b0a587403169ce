"""The inference server's input checks: every argument a program sends is untrusted, so each is
checked for type and bounded here before anything is queued (app/inference.py calls these).

Over a bound: TooLarge (HTTP 413); malformed: DataError (400); a request the server cannot
answer as asked (labels an adapter does not have, an encoder base without a head):
Unprocessable (422). Messages name the argument and the fix, never echo what was sent.
"""

from __future__ import annotations

from app.serving import MAX_INPUT_CHARS
from ia3engine.errors import DataError, IA3Error
from ia3engine.serve.predict_file import MAX_NEW_TOKENS

MAX_LABELS = 50  # labels in one request (rank classification scores each one per text)
MAX_LABEL_CHARS = 100  # characters in one label


class TooLarge(IA3Error):
    """A request over one of the bounds (texts, characters, new tokens): HTTP 413."""


class Unprocessable(IA3Error):
    """Well-formed but not answerable as asked (the message says what would be): HTTP 422."""


def check_texts(texts, max_texts: int) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, list | tuple):
        raise DataError('"texts" must be a list of strings, like ["a sentence", "another"].')
    if not texts:
        raise DataError('"texts" is empty; give at least one text to classify.')
    if len(texts) > max_texts:
        raise TooLarge(
            f"{len(texts)} texts in one request; the most this server takes is {max_texts} "
            "(IA3_SERVE_MAX_TEXTS). Split them over several requests."
        )
    for number, text in enumerate(texts, 1):
        check_text(text, f"text {number}")
    return list(texts)


def check_text(text, what: str) -> str:
    if not isinstance(text, str):
        raise DataError(f"{what} is not a string; send text.")
    if not text.strip():
        raise DataError(f"{what} is empty; send some text.")
    if len(text) > MAX_INPUT_CHARS:
        raise TooLarge(
            f"{what} has {len(text):,} characters; the most is {MAX_INPUT_CHARS:,}. Shorten it "
            "(models read only their first few hundred tokens)."
        )
    return text


def check_new_tokens(max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise DataError(f'"max_new_tokens" must be a whole number from 1 to {MAX_NEW_TOKENS}.')
    if max_new_tokens > MAX_NEW_TOKENS:
        raise TooLarge(
            f"max_new_tokens={max_new_tokens}; the most this server generates is "
            f"{MAX_NEW_TOKENS}. Ask for fewer."
        )
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens={max_new_tokens}; ask for 1 to {MAX_NEW_TOKENS}.")
    return max_new_tokens


def check_labels(labels) -> list[str] | None:
    """None, or 2 to MAX_LABELS distinct label names of 1 to MAX_LABEL_CHARS characters."""
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, list | tuple):
        raise DataError('"labels" must be a list of label names, like ["positive", "negative"].')
    if len(labels) > MAX_LABELS:
        raise TooLarge(f"{len(labels)} labels; the most one request may name is {MAX_LABELS}.")
    if len(labels) < 2:
        raise DataError('"labels" needs at least 2 names to choose between.')
    cleaned = []
    for number, label in enumerate(labels, 1):
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"label {number} is not a name; send each label as non-empty text.")
        if len(label) > MAX_LABEL_CHARS:
            raise TooLarge(
                f"label {number} has {len(label)} characters; the most is {MAX_LABEL_CHARS}."
            )
        cleaned.append(label.strip())
    if len(set(cleaned)) < len(cleaned):
        raise DataError('"labels" names the same label twice; name each label once.')
    return cleaned
