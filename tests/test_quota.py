"""The per-person storage quota: its setting, and what counts toward it."""

import pytest

from ia3engine.errors import ConfigError
from jobs import quota
from jobs.db import writing
from jobs.errors import LimitError
from jobs.models import DatasetBlob, utcnow


@pytest.mark.parametrize(("raw", "expected"), [("", 500 * 2**20), ("2", 2 * 2**20), ("none", None)])
def test_the_storage_quota_setting_is_read_in_megabytes(monkeypatch, raw, expected):
    monkeypatch.setenv("IA3_MAX_STORAGE_MB", raw)
    assert quota.limit_bytes() == expected


def test_a_mistyped_storage_quota_names_the_setting_and_the_fix(monkeypatch):
    monkeypatch.setenv("IA3_MAX_STORAGE_MB", "lots")
    with pytest.raises(ConfigError, match="IA3_MAX_STORAGE_MB=500"):
        quota.limit_bytes()


def test_datasets_in_the_database_count_toward_their_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IA3_MAX_STORAGE_MB", "1")
    with writing() as conn:
        conn.execute(
            DatasetBlob.__table__.insert(),
            [
                {
                    "name": "a.csv",
                    "sha256": "0" * 64,
                    "size_bytes": 900 * 1024,
                    "data": b"",
                    "owner": "ann",
                    "created_at": utcnow(),
                }
            ],
        )
    assert quota.stored_bytes("ann") == 900 * 1024 and quota.stored_bytes("bob") == 0
    with pytest.raises(LimitError, match="storage is full.*IA3_MAX_STORAGE_MB.*Delete"):
        quota.check("ann", 200 * 1024)
    quota.check("bob", 200 * 1024)
    quota.check(None, 10 * 2**20)  # the local user has no quota
