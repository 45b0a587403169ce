"""A queued job's dataset files: this person's uploads, within their storage quota, copied where
a job may name them and removed again once the database holds the job's own copy.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from app import auth, job_actions, preview, uploads
from jobs import quota


@contextlib.contextmanager
def staged_uploads(paths: dict[str, str], data_dir: Path) -> Iterator[dict[str, str]]:
    """Copies of uploaded dataset files where a queued job may name them (the data directory's
    uploads), removed once the job is queued: the database keeps the job's own copy.

    Samples pass through as they are. Each call gets its own folder, so two people queueing the
    same file never remove each other's copy.
    """
    folder = Path(data_dir) / "uploads" / secrets.token_hex(16)
    staged = {}
    try:
        for field, path in paths.items():
            if not path or Path(path).resolve().is_relative_to(preview.EXAMPLES):
                staged[field] = path
                continue
            source = Path(preview.check_dataset_file(path))
            target = folder / field / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            staged[field] = str(target)
        yield staged
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def enqueue_with_uploads(fields: dict, files: dict[str, str], data_dir: Path) -> int:
    """Queue a job whose `files` (data, eval_data) are this person's uploads: within their
    storage quota, named by copies a job may use, which go once the database holds the job's."""
    actor = auth.current_actor()
    if actor.signed_in:
        quota.check(actor.name, sum(uploads.file_size(path) for path in files.values() if path))
    with staged_uploads(files, data_dir) as staged:
        return job_actions.enqueue_training({**fields, **staged})
