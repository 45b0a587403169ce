"""Files handed to the page or an API client when several people share the studio.

The data directory is never served as a folder then (it holds the database and everyone's
files): each file is copied once per person into an unguessable folder of Gradio's cache, which
`/gradio_api/file=` serves to that person only (app.uploads), and reused while it is unchanged.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from app import access_mode, auth, uploads

logger = logging.getLogger(__name__)

KEEP_S = 3600.0  # copies older than this are removed when the next one is made
PREFIX = uploads.HANDED_OUT
_lock = threading.Lock()
_copies: dict[tuple[str, str, int, int], str] = {}  # (user, source, size, mtime) -> copy
COPIES = 10_000  # copies remembered; the oldest is made again when asked for


def _sweep(root: Path) -> None:
    cutoff = time.time() - KEEP_S
    for folder in root.glob(PREFIX + "*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another request removed it first
            continue


def servable(path: str | Path) -> str:
    """A path Gradio may hand out for `path`: itself for the local user, else this person's
    private copy (made once while the file is unchanged)."""
    if not access_mode.active().multi_user:
        return str(path)
    source = Path(path)
    user = auth.current_actor().name or ""
    stat = source.stat()
    key = (user, str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _copies.get(key)
    if known:
        try:
            os.utime(Path(known).parent)  # still in use: the sweep keeps it
        except OSError:  # swept meanwhile: make a new copy below
            known = None
    if known and os.path.isfile(known):
        uploads.record(user, known, stat.st_size)
        return known
    root = uploads.upload_folder()
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    folder = root / (PREFIX + secrets.token_hex(16))
    folder.mkdir(mode=0o700)
    target = folder / source.name
    partial = folder / f".{source.name}.partial"
    shutil.copyfile(source, partial)
    partial.replace(target)  # a parallel reader never sees half a file
    uploads.record(user, target, stat.st_size)
    with _lock:
        if len(_copies) >= COPIES:
            _copies.pop(next(iter(_copies)))
        _copies[key] = str(target)
    return str(target)
