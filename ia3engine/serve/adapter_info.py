"""What an adapter folder says about the rows it answers: its training info (labels, prompt,
kind, template) and the text as training saw it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ia3engine.errors import AdapterFileError
from ia3engine.training.run import TRAINING_INFO


def read_training_info(folder) -> dict:
    path = Path(folder) / TRAINING_INFO
    if not path.is_file():
        raise AdapterFileError(
            f"No {TRAINING_INFO} in {folder}; it holds the labels and prompt. Point to a "
            "folder written by ia3engine's train()."
        )
    return json.loads(path.read_text())


def render_input(info: dict, text: str) -> str:
    """The text as training saw it: the data's template with the text in its text column."""
    template = info.get("template")
    if not template:
        return text
    slots = defaultdict(str, {info.get("text_column") or "text": text, "text": text})
    return template.format_map(slots)
