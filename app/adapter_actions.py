"""Studio actions on registered adapters: list, show, download, import, rename, delete, export.

Thin calls into jobs.access as the signed-in person, returning plain values (paths as strings)
for the page and API.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from app import uploads
from app.access_files import servable
from app.adapter_cache import MODEL_LOCK
from app.auth import current_actor
from app.job_actions import _plain
from app.model_pool import forget_adapter
from ia3engine.errors import AdapterError
from ia3engine.serve.export import export_merged as merge_into_base
from jobs import access, quota
from jobs.db import data_dir

logger = logging.getLogger(__name__)

# Files of an adapter folder a person may download one by one (never anything else on disk).
DOWNLOADABLE = ("adapter_model.safetensors", "adapter_config.json", "README.md")
ZIP_TRIES = 3  # a zip renamed away under a download is made again, this many times at most


def list_adapters(
    search: str = "", base_model: str = "", task: str = "", sort: str = "-created"
) -> list[dict]:
    """Registered adapters, filtered by a search text, base model and task."""
    found = access.list_adapters(
        current_actor(),
        base_model=base_model or None,
        task=task or None,
        search=search or None,
        sort=sort,
    )
    return [_summary(a) for a in found]


def _summary(adapter) -> dict:
    info = _plain(adapter)
    info.pop("card", None)  # cards are long; adapter_info() has them
    return info


def adapter_info(adapter_id: int) -> dict:
    """One adapter: name, base model, task, labels, metrics, card, files."""
    info = _plain(access.get_adapter(int(adapter_id), actor=current_actor()))
    info["files"] = [p.name for p in adapter_files(adapter_id)]
    return info


def adapter_zip(adapter_id: int) -> str:
    """Path of a zip of the adapter (PEFT files + model card) that loads in peft as is.

    The zip is named after the adapter, and a download under a new name removes the zip of
    the old one: a request handed the old zip in the instant before a rename can find it gone
    when it copies it, so it asks again (it gets the zip of the new name)."""
    actor = current_actor()
    for attempt in range(ZIP_TRIES):
        made = access.package_zip(int(adapter_id), actor=actor)
        try:
            path = servable(made)
            if os.path.isfile(path):  # the local user is handed the zip itself, not a copy
                return path
        except FileNotFoundError:  # a person's private copy found the zip gone
            pass
        logger.info("Adapter %s's zip went while it was served (try %d)", adapter_id, attempt + 1)
    raise AdapterError(
        f"Adapter {adapter_id} was renamed several times while its zip was being made; "
        "download it again."
    )


def adapter_files(adapter_id: int) -> list[Path]:
    """The adapter's downloadable files, materialised from the database."""
    folder = Path(access.adapter_folder(int(adapter_id), actor=current_actor()))
    extra = sorted(p for p in folder.glob("*.json") if p.name not in DOWNLOADABLE)
    found = [folder / name for name in DOWNLOADABLE if (folder / name).is_file()] + extra
    return [Path(servable(path)) for path in found]  # private copies when several people share


def adapter_file(adapter_id: int, filename: str) -> str:
    """Path of one file of the adapter; refuses names that are not the adapter's files."""
    for path in adapter_files(adapter_id):
        if path.name == filename:
            return str(path)
    names = ", ".join(p.name for p in adapter_files(adapter_id))
    raise AdapterError(f"Adapter {adapter_id} has no file {filename!r}; its files are: {names}.")


def import_adapter(path: str, base_model: str = "", name: str = "") -> int:
    """Register an adapter zip or folder (safetensors only); returns its id."""
    if not path:
        raise AdapterError("No file given. Upload an adapter .zip (PEFT format).")
    actor = current_actor()
    if actor.signed_in and Path(path).is_file():
        size = Path(path).stat().st_size  # the adapter is kept in the database
        quota.check(actor.name, size, max(uploads.uploaded_bytes(actor.name) - size, 0))
    return int(
        access.import_adapter(
            Path(path), actor=actor, base_model=base_model or None, name=name or None
        )
    )


def rename_adapter(adapter_id: int, name: str) -> dict:
    """Give an adapter a new display name; returns the updated adapter."""
    clean = (name or "").strip()
    if not clean:
        raise AdapterError("The new name is empty. Type a name for the adapter.")
    return _summary(access.rename_adapter(int(adapter_id), clean, actor=current_actor()))


def delete_adapter(adapter_id: int) -> int:
    """Delete an adapter's row and files; returns the id that was deleted."""
    access.delete_adapter(int(adapter_id), actor=current_actor())
    forget_adapter(int(adapter_id))  # its vectors leave the playground's memory at once
    logger.info("deleted adapter %s", adapter_id)
    return int(adapter_id)


def export_merged(adapter_id: int) -> str:
    """Zip of the base model with the adapter merged in (a plain transformers folder); made
    once per adapter, counted in its owner's storage, removed a day after it was last asked."""
    actor = current_actor()
    info = access.get_adapter(int(adapter_id), actor=actor)  # refuses what the caller may not see
    folder = Path(access.adapter_folder(int(adapter_id), actor=actor))
    quota.sweep_exports()
    exports = data_dir() / "exports"
    archive = exports / f"adapter-{int(adapter_id)}-{info.sha256[:12]}.zip"
    if archive.is_file():  # an adapter's files never change, so one export serves all
        os.utime(archive)  # asked again: the sweep keeps it another day
        return servable(archive)
    if info.owner:
        quota.check(info.owner, 0)  # already over: refuse before the costly merge
    exports.mkdir(parents=True, exist_ok=True)
    # A folder of its own per call: parallel exports never write into each other's files.
    work = Path(tempfile.mkdtemp(dir=exports, prefix=archive.stem + ".building-"))
    try:
        with MODEL_LOCK:  # one model load at a time in the studio process
            merge_into_base(folder, work / "model", base_model=info.base_model)
        made = shutil.make_archive(str(work / "merged"), "zip", root_dir=work / "model")
        os.replace(made, archive)  # a reader never sees half a zip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("exported adapter %s merged into %s", adapter_id, info.base_model)
    return servable(archive)
