"""Where the state lives: the data directory, the database URL and the engine per URL.

SQLite (default, a file in the data directory) gets WAL, a busy timeout and real
`BEGIN IMMEDIATE` write transactions; PostgreSQL is used as is. Alembic migrations run
once per engine, under an advisory lock on PostgreSQL so that workers may start together.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 4_193_003
_READ_ONLY = "ia3_read_only"
_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def data_dir() -> Path:
    """The folder for the SQLite file, materialised adapters, checkpoints and logs."""
    path = Path(os.environ.get("IA3_DATA_DIR") or "ia3-data").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """IA3_DATABASE_URL, or the SQLite file ia3.db in the data directory."""
    url = os.environ.get("IA3_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{(data_dir() / 'ia3.db').resolve()}"


def is_sqlite(db: Engine | Connection) -> bool:
    return db.dialect.name == "sqlite"


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: database_url()), migrated to the newest schema.

    Cached per process and URL: a forked or spawned worker builds its own.
    """
    url = url or database_url()
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _make_engine(url)
            migrate(engine)
            _engines[key] = engine
    return engine


def resolve(db: Engine | str | None) -> Engine:
    """Accepts what public functions take as `db`: an Engine, a URL or None."""
    if isinstance(db, Engine):
        return db
    return get_engine(db)


def dispose_engines() -> None:
    """Close every cached engine of this process (tests, and before dropping a database)."""
    with _lock:
        for (pid, _), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    _install_sqlite_transactions(engine)
    return engine


def _install_sqlite_transactions(engine: Engine) -> None:
    """Make pysqlite issue real BEGIN IMMEDIATE for writes (see env-notes, Python 3.11).

    The stock driver starts transactions lazily and runs SELECTs outside them, which
    lets two processes claim the same job; with isolation_level=None we begin ourselves.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Reads take no lock; anything that may write takes the write lock up front,
        # so a transaction never has to upgrade (and deadlock) half-way.
        mode = "DEFERRED" if conn.get_execution_options().get(_READ_ONLY) else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def writing(db: Engine | str | None = None) -> Iterator[Connection]:
    """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
    engine = resolve(db)
    with engine.begin() as conn:
        yield conn


@contextmanager
def reading(db: Engine | str | None = None) -> Iterator[Connection]:
    """A read-only transaction that takes no write lock on SQLite."""
    engine = resolve(db)
    with engine.connect() as conn:
        conn = conn.execution_options(**{_READ_ONLY: True})
        with conn.begin():
            yield conn


def _alembic_config():
    # Alembic announces its plugins at INFO on first import: noise in every CLI command.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current_revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.scalar(text("SELECT version_num FROM alembic_version"))


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`; rows survive every step."""
    cfg = _alembic_config()
    from alembic import command

    # Alembic's config is an ini parser: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(False).replace("%", "%%"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        if revision == "head" and _current_revision(conn) == head_revision():
            return  # the usual case: nothing to do, and nothing for Alembic to log
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.debug("database %s at schema %s", engine.url.render_as_string(True), revision)
