"""Schema upgrades keep every job, event and adapter (SQLite and PostgreSQL)."""

from __future__ import annotations

import jobs_support
from sqlalchemy import text

from jobs import queue, registry
from jobs.db import _make_engine, get_engine, head_revision, migrate

db_url = jobs_support.db_url  # the fixture: a fresh SQLite, then PostgreSQL, database

ROWS_AT_0001 = [
    """INSERT INTO jobs (id, status, spec, owner, priority, created_at, attempts,
       cancel_requested, message, adapter_id)
       VALUES (7, 'done', '{"model": "minilm", "data": "a.csv"}', 'ann', 2,
       '2024-05-01 10:00:00', 1, false, 'Done.', 3)""",
    """INSERT INTO job_events (job_id, attempt, type, time, data)
       VALUES (7, 1, 'step', '2024-05-01 10:00:05', '{"step": 1, "loss": 0.7}')""",
    """INSERT INTO adapters (id, name, base_model, task, size_bytes, sha256, created_at, owner,
       job_id, card) VALUES (3, 'reviews', 'minilm', 'classify', 4, 'ab', '2024-05-01 10:01:00',
       'ann', 7, '# reviews')""",
]


def test_upgrade_from_the_first_schema_keeps_rows(db_url):
    engine = _make_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        for statement in ROWS_AT_0001:
            conn.execute(text(statement))
        conn.execute(
            text("INSERT INTO adapter_files (adapter_id, name, data) VALUES (3, 'README.md', :d)"),
            {"d": b"# reviews"},
        )
    engine.dispose()

    upgraded = get_engine(db_url)  # what every process does at start
    with upgraded.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
    job = queue.get_job(7, db=db_url)
    assert (job.status, job.owner, job.priority, job.message) == ("done", "ann", 2, "Done.")
    assert job.spec == {"model": "minilm", "data": "a.csv"}
    assert job.max_attempts == 3 and job.data_blob_id is None  # columns added by 0002
    assert [(e.type, e.data) for e in queue.job_events(7, db=db_url)] == [
        ("step", {"step": 1, "loss": 0.7})
    ]
    adapter = registry.get_adapter(3, db=db_url)
    assert (adapter.name, adapter.job_id, adapter.card) == ("reviews", 7, "# reviews")
    assert registry.adapter_files(3, db=db_url) == {"README.md": b"# reviews"}
