"""Files kept in the database: job checkpoints (a zipped folder) and uploaded datasets.

With these a worker on another machine needs nothing but the database URL: it restores
the newest checkpoint of a job it takes over, and the dataset the job was submitted with.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from sqlalchemy import Connection, delete, insert, select

from ia3engine.errors import DataError
from jobs.db import data_dir, reading
from jobs.errors import JobError
from jobs.models import Checkpoint, DatasetBlob, utcnow

log = logging.getLogger(__name__)

DEFAULT_DATASET_CAP = 200 * 1024 * 1024


def dataset_cap() -> int:
    """Largest dataset file kept in the database (IA3_MAX_DATASET_BYTES, default 200 MB)."""
    return int(os.environ.get("IA3_MAX_DATASET_BYTES") or DEFAULT_DATASET_CAP)


def zip_folder(folder: Path) -> bytes:
    """Every regular file under `folder`, stored (IA3 files barely compress)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def safe_member_name(name: str) -> str | None:
    """The entry's relative path, or None when it would land outside the target folder."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("..", "") for part in parts):
        return None
    return PurePosixPath(*parts).as_posix()


def unzip_to(data: bytes, target: Path) -> None:
    """Extract a zip made by zip_folder into `target`, refusing entries that escape it."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = safe_member_name(info.filename)
            if name is None:
                raise JobError(f"Stored archive has an unsafe entry {info.filename!r}; refused.")
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(archive.read(info))


# Checkpoints ---------------------------------------------------------------------------


def pack_checkpoint(folder: Path, checkpoint_dir: Path) -> tuple[str, bytes]:
    """(path relative to checkpoint_dir, zipped folder) for a checkpoint event's folder."""
    folder, checkpoint_dir = Path(folder).resolve(), Path(checkpoint_dir).resolve()
    relative = folder.relative_to(checkpoint_dir).as_posix() if folder != checkpoint_dir else "."
    return relative, zip_folder(folder)


def store_checkpoint(conn: Connection, job_id: int, step: int, relative: str, data: bytes):
    """Keep a packed checkpoint as the job's newest one, inside the caller's transaction."""
    conn.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
    conn.execute(
        insert(Checkpoint).values(
            job_id=job_id, step=int(step), path=relative, data=data, created_at=utcnow()
        )
    )
    log.info("job %s: checkpoint at step %s stored (%d bytes)", job_id, step, len(data))


def checkpoint_step(job_id: int, *, db=None) -> int | None:
    with reading(db) as conn:
        return conn.scalar(select(Checkpoint.step).where(Checkpoint.job_id == job_id))


def restore_checkpoint(job_id: int, checkpoint_dir: Path, *, db=None) -> int | None:
    """Empty `checkpoint_dir` and put the job's stored checkpoint there; returns its step.

    The database copy wins over whatever a previous attempt left on this disk, so every
    machine resumes from the same state.
    """
    with reading(db) as conn:
        row = conn.execute(
            select(Checkpoint.step, Checkpoint.path, Checkpoint.data).where(
                Checkpoint.job_id == job_id
            )
        ).first()
    checkpoint_dir = Path(checkpoint_dir)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    if row is None:
        return None
    relative = safe_member_name(row.path) if row.path != "." else "."
    if relative is None:
        raise JobError(f"Job {job_id}'s stored checkpoint path {row.path!r} is unsafe.")
    unzip_to(row.data, checkpoint_dir / relative)
    return row.step


def drop_checkpoint(conn: Connection, job_id: int) -> None:
    conn.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))


# Datasets ------------------------------------------------------------------------------


def store_dataset(conn: Connection, path: str | Path, *, owner: str | None = None) -> int:
    """Copy a dataset file into the database (deduplicated by content); returns its id."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Dataset file '{path}' does not exist; check the path and submit again.")
    size, cap = path.stat().st_size, dataset_cap()
    if size > cap:
        raise DataError(
            f"Dataset file '{path.name}' is {size / 1e6:.1f} MB; the database keeps files up "
            f"to {cap / 1e6:.0f} MB (IA3_MAX_DATASET_BYTES). Submit without uploading it, "
            "from a folder every worker can read, or raise the cap."
        )
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    existing = conn.scalar(
        select(DatasetBlob.id).where(DatasetBlob.sha256 == sha, DatasetBlob.name == path.name)
    )
    if existing is not None:
        return existing
    return conn.scalar(
        insert(DatasetBlob)
        .values(name=path.name, sha256=sha, size_bytes=size, data=data, owner=owner)
        .returning(DatasetBlob.id)
    )


def materialise_dataset(blob_id: int, *, db=None) -> Path:
    """The stored dataset as a file under the data directory (written once per content)."""
    with reading(db) as conn:
        row = conn.execute(
            select(DatasetBlob.name, DatasetBlob.sha256).where(DatasetBlob.id == blob_id)
        ).first()
        if row is None:
            raise DataError(f"Stored dataset {blob_id} is gone from the database; submit again.")
        target = data_dir() / "datasets" / row.sha256 / row.name
        if target.is_file():
            return target
        data = conn.scalar(select(DatasetBlob.data).where(DatasetBlob.id == blob_id))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target
