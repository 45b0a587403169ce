"""Schema upgrades keep every job, event and adapter (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text

from jobs import queue, registry
from jobs.db import _make_engine, get_engine, head_revision, migrate

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


ROWS_AT_0003 = [
    *ROWS_AT_0001,
    "INSERT INTO adapter_files (adapter_id, name, data) VALUES (3, 'README.md', :blob)",
    """INSERT INTO adapter_shares (adapter_id, token, adapter_sha256, created_by, created_at)
       VALUES (3, 'secret-token', 'ab', 'ann', '2024-05-01 10:02:00')""",
    """INSERT INTO datasets (id, name, sha256, size_bytes, data, owner, created_at)
       VALUES (5, 'a.csv', 'cd', 2, :blob, 'ann', '2024-05-01 09:59:00')""",
]


def _new_adapter(conn, name: str) -> int:
    return conn.execute(
        text(
            "INSERT INTO adapters (name, size_bytes, sha256, created_at) "
            "VALUES (:n, 0, 'ef', '2024-05-02 10:00:00') RETURNING id"
        ),
        {"n": name},
    ).scalar_one()


def test_upgrade_to_0004_keeps_every_row_and_link_and_ids_are_never_reused(db_url):
    engine = _make_engine(db_url)
    migrate(engine, "0003")
    with engine.begin() as conn:
        for statement in ROWS_AT_0003:
            conn.execute(text(statement), {"blob": b"hi"} if ":blob" in statement else {})
    migrate(engine, "0004")
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT token FROM adapter_shares WHERE adapter_id = 3"))
        assert conn.scalar(text("SELECT count(*) FROM job_events WHERE job_id = 7")) == 1
        assert conn.scalar(text("SELECT name FROM datasets WHERE id = 5")) == "a.csv"
        newest = _new_adapter(conn, "newest")
        assert newest > 3
        conn.execute(text("DELETE FROM adapters WHERE id = :i"), {"i": newest})
        # The deleted newest id is not handed out again (SQLite would without AUTOINCREMENT).
        assert _new_adapter(conn, "next") > newest
        # Foreign keys still hold: deleting adapter 3 takes its files and share link with it.
        conn.execute(text("DELETE FROM adapters WHERE id = 3"))
        assert conn.scalar(text("SELECT count(*) FROM adapter_files")) == 0
        assert conn.scalar(text("SELECT count(*) FROM adapter_shares")) == 0
    engine.dispose()


def test_a_deleted_newest_job_or_adapter_id_is_never_given_again(db_url, tmp_path):
    data = tmp_path / "a.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    spec = {"model": "minilm", "data": str(data)}
    job = queue.enqueue(spec, db=db_url)
    with get_engine(db_url).begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = :i"), {"i": job})
        adapter = _new_adapter(conn, "first")
        conn.execute(text("DELETE FROM adapters WHERE id = :i"), {"i": adapter})
        assert _new_adapter(conn, "second") > adapter
    assert queue.enqueue(spec, db=db_url) > job
