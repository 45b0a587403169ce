"""Adapter registry on SQLite and PostgreSQL: register, list, package (loads in peft),
import with safety and shape checks, rename, delete."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest
import tiny_models
import torch
from peft import IA3Config, PeftModel, get_peft_model
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from app import adapter_actions
from ia3engine.errors import AdapterError, AdapterFileError
from jobs import access, registry
from jobs.db import get_engine, reading, writing
from jobs.models import Adapter, AdapterFile, Job


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny BERT classifier saved as a model folder (the 'named base model')."""
    folder = tmp_path_factory.mktemp("base")
    tiny_models.bert(num_labels=3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def peft_adapter(base_dir, tmp_path_factory):
    """(folder, logits) of a real PEFT IA3 adapter with non-trivial vectors."""

    base = AutoModelForSequenceClassification.from_pretrained(base_dir)
    model = get_peft_model(base, IA3Config(task_type="SEQ_CLS"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name or "classifier" in name:
                param.add_(torch.randn_like(param) * 0.3)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    info = {"task": "classify", "labels": ["neg", "neu", "pos"], "base_model": str(base_dir)}
    (folder / "training_info.json").write_text(json.dumps(info))
    model.eval()
    with torch.no_grad():
        logits = model(**tiny_models.token_batch("bert")).logits
    return folder, logits


def _count(url, table) -> int:
    with reading(url) as conn:
        return conn.scalar(select(func.count()).select_from(table))


def test_register_keeps_files_and_metadata(db_url, peft_adapter, base_dir):
    folder, _ = peft_adapter
    adapter_id = registry.register_adapter(folder, name="sentiment", owner="ann", db=db_url)
    info = registry.get_adapter(adapter_id, db=db_url)
    assert (info.name, info.owner, info.task) == ("sentiment", "ann", "classify")
    assert info.base_model == str(base_dir)
    assert info.labels == ["neg", "neu", "pos"]
    assert info.target_modules == ["key", "output.dense", "value"]
    assert info.trainable_params > 0 and info.size_bytes > 0 and len(info.sha256) == 64
    written = registry.adapter_folder(adapter_id, db=db_url)
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_info.json"):
        assert (written / name).read_bytes() == (folder / name).read_bytes()


def test_package_zip_loads_in_peft_as_is(db_url, peft_adapter, base_dir, tmp_path):
    folder, logits = peft_adapter
    adapter_id = registry.register_adapter(folder, name="my adapter/v1", db=db_url)
    archive = registry.package_zip(adapter_id, db=db_url)
    with zipfile.ZipFile(archive) as z:
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(
            z.namelist()
        )
        z.extractall(tmp_path / "unzipped")
    base = AutoModelForSequenceClassification.from_pretrained(base_dir)
    loaded = PeftModel.from_pretrained(base, tmp_path / "unzipped").eval()
    with torch.no_grad():
        again = loaded(**tiny_models.token_batch("bert")).logits
    torch.testing.assert_close(again, logits)


def test_a_zip_another_request_serves_is_never_removed(db_url, peft_adapter, monkeypatch):
    """A rename leaves the zip of the old name to be removed by the next download, but a
    download that found no zip of the current name (another request may write it the moment
    after) must not remove that one: the other request is serving it."""
    folder, _ = peft_adapter
    adapter_id = registry.register_adapter(folder, name="first", db=db_url)
    old = registry.package_zip(adapter_id, db=db_url)
    registry.rename_adapter(adapter_id, "second", db=db_url)
    served = registry.package_zip(adapter_id, db=db_url)
    assert served.is_file() and served.name != old.name and not old.exists()
    is_file = type(served).is_file
    monkeypatch.setattr(  # this request checked just before the other one wrote the zip
        type(served), "is_file", lambda path: False if path == served else is_file(path)
    )
    with open(served, "rb") as being_served:  # the other request's open file
        again = registry.package_zip(adapter_id, db=db_url)
        assert os.fstat(being_served.fileno()).st_nlink == 1  # still linked: never removed
    monkeypatch.undo()
    assert again == served
    with zipfile.ZipFile(served) as z:
        assert "adapter_model.safetensors" in z.namelist()


def test_list_filters_searches_and_sorts(db_url, peft_adapter):
    folder, _ = peft_adapter
    ids = {
        name: registry.register_adapter(folder, name=name, owner=owner, db=db_url)
        for name, owner in (("Beta reviews", "ann"), ("alpha tickets", "bob"), ("gamma", "ann"))
    }
    names = lambda adapters: [a.name for a in adapters]  # noqa: E731
    assert names(registry.list_adapters(db=db_url)) == ["gamma", "alpha tickets", "Beta reviews"]
    assert names(registry.list_adapters(sort="name", db=db_url)) == [
        "alpha tickets",
        "Beta reviews",
        "gamma",
    ]
    assert names(registry.list_adapters(owner="ann", sort="created", db=db_url)) == [
        "Beta reviews",
        "gamma",
    ]
    assert names(registry.list_adapters(search="REVIEW", db=db_url)) == ["Beta reviews"]
    assert registry.list_adapters(task="generate", db=db_url) == []
    assert len(registry.list_adapters(task="classify", db=db_url)) == len(ids)
    with pytest.raises(AdapterError, match="Unknown sort"):
        registry.list_adapters(sort="colour", db=db_url)


def test_rename_and_delete_remove_row_and_files(db_url, peft_adapter):
    folder, _ = peft_adapter
    adapter_id = registry.register_adapter(folder, name="old", db=db_url)
    assert registry.rename_adapter(adapter_id, "  new   name ", db=db_url).name == "new name"
    with pytest.raises(AdapterError, match="cannot be empty"):
        registry.rename_adapter(adapter_id, "   ", db=db_url)
    written = registry.adapter_folder(adapter_id, db=db_url)
    archive = registry.package_zip(adapter_id, db=db_url)
    registry.delete_adapter(adapter_id, db=db_url)
    assert not written.exists() and not archive.exists()
    assert _count(db_url, Adapter) == 0 and _count(db_url, AdapterFile) == 0
    with pytest.raises(AdapterError, match="No adapter with id"):
        registry.get_adapter(adapter_id, db=db_url)


def test_one_job_registers_at_most_one_adapter(db_url, peft_adapter):
    folder, _ = peft_adapter
    files = registry.read_folder(folder)
    with writing(db_url) as conn:
        job_id = conn.scalar(
            insert(Job)
            .values(status="running", spec={}, priority=0, attempts=1, cancel_requested=False)
            .returning(Job.id)
        )
        registry.register_files(conn, files, name="first", job_id=job_id)
    with pytest.raises(IntegrityError), writing(db_url) as conn:
        registry.register_files(conn, files, name="second", job_id=job_id)
    assert [a.name for a in registry.list_adapters(db=db_url)] == ["first"]
    assert _count(db_url, AdapterFile) == len(files)


def test_import_folder_and_zip_checked_against_base(db_url, peft_adapter, base_dir, tmp_path):
    folder, _ = peft_adapter
    first = registry.import_adapter(folder, base_model=str(base_dir), name="f", db=db_url)
    # A zip of the folder itself (files one level down), as people usually make them.
    archive = shutil.make_archive(str(tmp_path / "shared"), "zip", folder.parent, folder.name)
    second = registry.import_adapter(archive, db=db_url)
    assert registry.get_adapter(second, db=db_url).name == "shared"
    assert registry.get_adapter(first, db=db_url).sha256 == (
        registry.get_adapter(second, db=db_url).sha256
    )


def _zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "entry, message",
    [("../evil/adapter_config.json", "outside the archive"), ("/etc/x", "outside the archive")],
)
def test_import_refuses_path_traversal(db_url, peft_adapter, tmp_path, entry, message):
    folder, _ = peft_adapter
    entries = {p.name: p.read_bytes() for p in folder.iterdir()}
    entries[entry] = b"{}"
    with pytest.raises(AdapterFileError, match=message):
        registry.import_adapter(_zip(tmp_path / "bad.zip", entries), db=db_url)
    assert _count(db_url, Adapter) == 0


def test_import_refuses_pickle_files(db_url, peft_adapter, tmp_path):
    folder, _ = peft_adapter
    bad = tmp_path / "pickled"
    shutil.copytree(folder, bad)
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(AdapterFileError, match="pickle"):
        registry.import_adapter(bad, db=db_url)
    assert _count(db_url, Adapter) == 0


def test_import_refuses_shapes_of_another_base(db_url, peft_adapter, tmp_path):
    other = tmp_path / "wider-base"
    config = BertConfig(
        vocab_size=128,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForSequenceClassification(config).save_pretrained(other)
    folder, _ = peft_adapter
    with pytest.raises(AdapterFileError, match="does not fit base model") as refusal:
        registry.import_adapter(folder, base_model=str(other), db=db_url)
    assert "attention.self.key.ia3_l" in str(refusal.value)
    assert _count(db_url, Adapter) == 0


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"adapter_model.safetensors": b"not a tensor file"}, "not a readable safetensors"),
        ({"adapter_config.json": b'{"peft_type": "LORA"}'}, "only IA3"),
        ({"adapter_config.json": b"{oops"}, "not valid JSON"),
    ],
)
def test_import_refuses_damaged_files(db_url, peft_adapter, tmp_path, damage, message):
    folder, _ = peft_adapter
    entries = {p.name: p.read_bytes() for p in folder.iterdir()} | damage
    with pytest.raises(AdapterFileError, match=message):
        registry.import_adapter(_zip(tmp_path / "bad.zip", entries), db=db_url)
    assert _count(db_url, Adapter) == 0


def test_import_refuses_unknown_base_model_offline(db_url, peft_adapter):
    folder, _ = peft_adapter
    with pytest.raises(AdapterFileError, match="Cannot check the adapter against base model"):
        registry.import_adapter(folder, base_model="nobody/no-such-model-xyz", db=db_url)
    assert _count(db_url, Adapter) == 0


def test_engine_is_migrated_on_first_use(db_url):
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"jobs", "job_events", "adapters", "adapter_files", "checkpoints", "datasets"} <= tables


def test_a_download_handed_a_zip_renamed_away_asks_again(db_url, peft_adapter, monkeypatch):
    """The narrow race left by the test above: a request handed the zip of the old name in the
    instant before the owner renamed the adapter (and another download removed that zip) asks
    again and serves the zip of the new name; renamed away on every try, it gets a message."""
    folder, _ = peft_adapter
    adapter_id = registry.register_adapter(folder, name="first", db=db_url)
    made = registry.package_zip
    names = iter(["second", "third", "fourth", "fifth"])
    renames_left = [1]

    def renamed_meanwhile(adapter, *, actor, db=None):
        handed = made(adapter)
        if renames_left[0]:
            renames_left[0] -= 1
            registry.rename_adapter(adapter, next(names))
            made(adapter)  # another download packs the new name and removes the old zip
        return handed

    monkeypatch.setattr(access, "package_zip", renamed_meanwhile)
    served = adapter_actions.adapter_zip(adapter_id)
    assert os.path.basename(served).startswith("second-") and os.path.isfile(served)
    with zipfile.ZipFile(served) as z:
        assert "adapter_model.safetensors" in z.namelist()

    renames_left[0] = adapter_actions.ZIP_TRIES  # renamed away under every try
    with pytest.raises(AdapterError, match="renamed several times.*download it again"):
        adapter_actions.adapter_zip(adapter_id)
