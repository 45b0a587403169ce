"""The adapter registry: register, list, fetch, package, import, rename, delete.

Adapter files live in the database (adapter_files); adapter_folder() and package_zip()
write them out under the data directory when a caller needs them on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from ia3engine.errors import AdapterError
from jobs import adapter_files as files_
from jobs import quota
from jobs.db import data_dir, reading, writing
from jobs.models import Adapter, AdapterFile, Job, as_utc, utcnow

log = logging.getLogger(__name__)

SORTS = {
    "created": Adapter.id,
    "name": func.lower(Adapter.name),
    "size": Adapter.size_bytes,
    "base_model": Adapter.base_model,
}
_TASKS = {"SEQ_CLS": "classify", "CAUSAL_LM": "generate", "SEQ_2_SEQ_LM": "generate"}


@dataclass(frozen=True)
class AdapterInfo:
    id: int
    name: str
    base_model: str | None
    task: str | None
    labels: list | None
    target_modules: list | None
    trainable_params: int | None
    metrics: dict | None
    size_bytes: int
    sha256: str
    dataset_fingerprint: str | None
    created_at: datetime
    owner: str | None
    job_id: int | None
    card: str | None
    base_revision: str | None = None


_COLUMNS = [getattr(Adapter, name) for name in AdapterInfo.__dataclass_fields__]


def _info(row) -> AdapterInfo:
    values = {name: getattr(row, name) for name in AdapterInfo.__dataclass_fields__}
    values["created_at"] = as_utc(values["created_at"])
    return AdapterInfo(**values)


def _fetch(conn: Connection, adapter_id: int) -> AdapterInfo:
    row = conn.execute(select(*_COLUMNS).where(Adapter.id == adapter_id)).first()
    if row is None:
        raise AdapterError(
            f"No adapter with id {adapter_id}; `ia3 adapters list` shows the adapters there are."
        )
    return _info(row)


# Registering ---------------------------------------------------------------------------


def register_files(
    conn: Connection,
    files: dict[str, bytes],
    *,
    name: str,
    owner: str | None = None,
    job_id: int | None = None,
    base_model: str | None = None,
    trainable_params: int | None = None,
    metrics: dict | None = None,
) -> int:
    """Store checked adapter files as one registry row, inside the caller's transaction.

    adapters.job_id is unique, so a job registers at most one adapter even if two
    attempts of it ever reached this point.
    """
    config, info, tensors = files_.parse(files)
    files = _without_server_paths(files)
    base_model = base_model or info.get("base_model") or config.get("base_model_name_or_path")
    metrics = metrics if metrics is not None else info.get("metrics")
    card = files.get(files_.CARD, b"").decode("utf-8", "replace") or _default_card(name, base_model)
    files = {**files, files_.CARD: card.encode("utf-8")}
    values = dict(
        name=_clean_name(name),
        base_model=base_model,
        base_revision=config.get("revision"),
        task=info.get("task") or _TASKS.get(config.get("task_type") or ""),
        labels=info.get("labels"),
        target_modules=_as_list(config.get("target_modules")),
        trainable_params=trainable_params or sum(t.numel() for t in tensors.values()),
        metrics=metrics,
        size_bytes=sum(len(data) for data in files.values()),
        sha256=hashlib.sha256(files[files_.WEIGHTS]).hexdigest(),
        dataset_fingerprint=info.get("data_fingerprint") or info.get("dataset_fingerprint"),
        created_at=utcnow(),
        owner=owner,
        job_id=job_id,
        card=card,
        info=info or None,
    )
    adapter_id = conn.scalar(insert(Adapter).values(**values).returning(Adapter.id))
    conn.execute(
        insert(AdapterFile),
        [{"adapter_id": adapter_id, "name": n, "data": d} for n, d in sorted(files.items())],
    )
    log.info("adapter %s registered (%s, base %s)", adapter_id, values["name"], base_model)
    return adapter_id


# Spec fields of training_info.json that may name files on the machine that trained.
_PATH_FIELDS = ("data", "eval_data", "out_dir")


def _without_server_paths(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files with training_info.json's dataset and output paths cut to file names: the
    info is downloaded with the adapter, and where a file sat on the server is nobody's business."""
    if files_.INFO not in files:
        return files
    try:
        info = json.loads(files[files_.INFO])
    except ValueError:  # parse() has accepted it already; leave what it accepted alone
        return files
    spec = info.get("spec") if isinstance(info, dict) else None
    if not isinstance(spec, dict):
        return files
    for field in _PATH_FIELDS:
        value = spec.get(field)
        if isinstance(value, str) and (value.startswith("/") or re.match(r"^[A-Za-z]:", value)):
            spec[field] = re.split(r"[/\\]", value.rstrip("/\\"))[-1]
    return {**files, files_.INFO: json.dumps(info, indent=2).encode("utf-8")}


def read_folder(folder: str | Path) -> dict[str, bytes]:
    """The registry's files from an adapter folder written by training."""
    return files_.read_source(folder)


def register_adapter(folder, *, name=None, owner=None, job_id=None, db=None) -> int:
    """Register an adapter folder written by this project's training (no base check)."""
    files = read_folder(folder)
    with writing(db) as conn:
        return register_files(
            conn, files, name=name or Path(folder).name, owner=owner, job_id=job_id
        )


def import_adapter(path, *, base_model=None, name=None, owner=None, db=None) -> int:
    """Import a PEFT IA3 adapter folder or zip after checking it against its base model.

    Refuses (AdapterFileError, nothing written) pickles, unsafe zip entries, files that
    are not IA3 safetensors, and tensors that do not fit the base model's layers.
    """
    path = Path(path)
    files = files_.read_source(path)
    config, info, tensors = files_.parse(files)
    base = base_model or info.get("base_model") or config.get("base_model_name_or_path")
    if not base:
        raise AdapterError(
            f"'{path.name}' does not say which base model it was trained on; pass "
            "--base-model with its Hub id or folder."
        )
    labels = info.get("labels")
    model = files_.meta_model(base, config.get("task_type"), len(labels) if labels else None)
    files_.check_against_model(config, tensors, model, base)
    with writing(db) as conn:
        return register_files(
            conn,
            files,
            name=name or path.name.removesuffix(".zip"),
            owner=owner,
            base_model=base,
        )


def _clean_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise AdapterError("An adapter name cannot be empty; give it a short descriptive name.")
    if len(name) > 200:
        raise AdapterError(f"Adapter names are at most 200 characters; this one has {len(name)}.")
    return name


def _as_list(value) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else sorted(value)


def _default_card(name: str, base_model: str | None) -> str:
    return (
        f"---\nlibrary_name: peft\nbase_model: {base_model or 'unknown'}\ntags: [ia3]\n---\n\n"
        f"# {name}\n\nAn (IA)^3 adapter for `{base_model or 'an unknown base model'}`, "
        "imported into IA3 Studio.\n"
    )


# Reading -------------------------------------------------------------------------------


def get_adapter(adapter_id: int, *, db=None) -> AdapterInfo:
    with reading(db) as conn:
        return _fetch(conn, adapter_id)


def list_adapters(
    *, base_model=None, task=None, owner=None, search=None, sort="-created", db=None
) -> list[AdapterInfo]:
    """Filter by base model, task and owner; `search` matches name, base model or task."""
    key = sort.removeprefix("-")
    if key not in SORTS:
        raise AdapterError(
            f"Unknown sort {sort!r}; use one of {', '.join(sorted(SORTS))} (prefix - to reverse)."
        )
    order = SORTS[key].desc() if sort.startswith("-") else SORTS[key].asc()
    query = select(*_COLUMNS).order_by(order, Adapter.id.desc())
    for column, value in ((Adapter.base_model, base_model), (Adapter.task, task)):
        if value is not None:
            query = query.where(column == value)
    if owner is not None:
        query = query.where(Adapter.owner == owner)
    if search:
        needle = f"%{search.lower()}%"
        query = query.where(
            or_(
                *(
                    func.lower(c).like(needle)
                    for c in (Adapter.name, Adapter.base_model, Adapter.task)
                )
            )
        )
    with reading(db) as conn:
        return [_info(row) for row in conn.execute(query)]


def adapter_files(adapter_id: int, *, db=None) -> dict[str, bytes]:
    with reading(db) as conn:
        _fetch(conn, adapter_id)
        rows = conn.execute(
            select(AdapterFile.name, AdapterFile.data).where(AdapterFile.adapter_id == adapter_id)
        )
        return {row.name: bytes(row.data) for row in rows}


def _written_once(target: Path, write) -> Path:
    """`target`, written by `write(partial)` under a unique name and renamed into place, so
    parallel callers never see (or remove) each other's half-written copy; kept once made."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        made = write(partial)
        try:
            os.rename(made, target)  # atomic: a reader sees the old whole file or the new one
        except OSError:  # a folder cannot replace another caller's folder that landed first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def adapter_folder(adapter_id: int, *, db=None) -> Path:
    """The adapter's files as a PEFT folder under the data directory (written once per
    adapter and content, then reused)."""
    info = get_adapter(adapter_id, db=db)
    folder = data_dir() / "adapters" / f"{adapter_id}-{info.sha256[:12]}"

    def write(partial: Path) -> Path:
        made = partial / "adapter"
        made.mkdir()
        for name, data in adapter_files(adapter_id, db=db).items():
            (made / name).write_bytes(data)
        return made

    return _written_once(folder, write)


def package_zip(adapter_id: int, *, db=None) -> Path:
    """A zip for download: adapter_model.safetensors, adapter_config.json, README.md (+info);
    written once per adapter, content and name, then reused."""
    info = get_adapter(adapter_id, db=db)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", info.name).strip("-.") or "adapter"
    folder = data_dir() / "downloads" / f"{adapter_id}-{info.sha256[:12]}"
    target = folder / f"{slug}-{adapter_id}.zip"
    if target.is_file():
        return target

    def write(partial: Path) -> Path:
        stored = adapter_files(adapter_id, db=db)
        made = partial / target.name
        with zipfile.ZipFile(made, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in files_.KEPT_FILES:
                if name in stored:
                    archive.writestr(name, stored[name])
        return made

    _written_once(target, write)
    # Zips made under an earlier name go, never this one: a parallel request may have written
    # it since the check above and be serving it now.
    for old in folder.glob("*.zip"):
        if old.name != target.name:
            old.unlink(missing_ok=True)
    return target


# Changing ------------------------------------------------------------------------------


def rename_adapter(adapter_id: int, name: str, *, db=None) -> AdapterInfo:
    with writing(db) as conn:
        _fetch(conn, adapter_id)
        conn.execute(update(Adapter).where(Adapter.id == adapter_id).values(name=_clean_name(name)))
        return _fetch(conn, adapter_id)


def delete_adapter(adapter_id: int, *, db=None) -> None:
    """Delete the row, its stored files and any copies written under the data directory."""
    with writing(db) as conn:
        _fetch(conn, adapter_id)
        conn.execute(delete(AdapterFile).where(AdapterFile.adapter_id == adapter_id))
        conn.execute(delete(Adapter).where(Adapter.id == adapter_id))
        conn.execute(update(Job).where(Job.adapter_id == adapter_id).values(adapter_id=None))
    for kind in ("adapters", "downloads"):
        for folder in (data_dir() / kind).glob(f"{adapter_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)
    for archive in (data_dir() / "downloads").glob(f"*-{adapter_id}.zip"):  # older layout
        archive.unlink(missing_ok=True)
    for export in quota.export_files(adapter_id):
        if export.is_dir():
            shutil.rmtree(export, ignore_errors=True)
        else:
            export.unlink(missing_ok=True)
    log.info("adapter %s deleted", adapter_id)


def adapter_summary(info: AdapterInfo) -> dict:
    """A JSON-ready dict (the CLI's --json and the Gradio API)."""
    values = {k: getattr(info, k) for k in AdapterInfo.__dataclass_fields__}
    values["created_at"] = info.created_at.isoformat()
    return json.loads(json.dumps(values, default=str))
