"""Files handed to the page or an API client when several people share the studio.

The data directory is never served as a folder then (it holds the database and everyone's
files): each download is copied to a fresh, unguessable temporary folder that Gradio serves.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from app import auth

logger = logging.getLogger(__name__)

KEEP_S = 3600.0  # copies older than this are removed when the next one is made


def _root() -> Path:
    return Path(tempfile.gettempdir()) / "ia3-serve"


def _sweep(root: Path) -> None:
    cutoff = time.time() - KEEP_S
    for folder in root.glob("*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another request removed it first
            continue


def servable(path: str | Path) -> str:
    """A path Gradio may hand out for `path`: itself for the local user, else a private copy."""
    if not auth.active().multi_user:
        return str(path)
    source = Path(path)
    root = _root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _sweep(root)
    folder = root / secrets.token_hex(16)
    folder.mkdir(mode=0o700)
    target = folder / source.name
    shutil.copyfile(source, target)
    return str(target)
