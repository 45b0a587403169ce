"""Where the state lives: the data directory, the database URL and the engine per URL.

SQLite (default, a file in the data directory) gets WAL, a busy timeout and real
`BEGIN IMMEDIATE` write transactions; PostgreSQL is used as is. Alembic migrations run
once per engine, under an advisory lock on PostgreSQL so that workers may start together.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Interval,
    create_engine,
    event,
    func,
    inspect,
    literal,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
# Alembic logs each step at INFO ("Context impl SQLiteImpl.", "Running upgrade ..."): noise on
# every command's stderr. It says only warnings unless the application set its level;
# migrate() says in one line what it changed.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 4_193_003
_READ_ONLY = "ia3_read_only"
_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()
# SQLite keeps times as text; this is the text SQLAlchemy writes for a DateTime (UTC, 6 digits
# of fraction), so times the database writes and times Python writes compare as they should.
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"
# A passing database error (locked, connection dropped) is tried again this many times.
TRANSIENT_TRIES = 6


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


SQLITE_WAIT_S = 30  # how long a SQLite connection waits for another's lock (busy, WAL switch)


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_WAIT_S})
    _install_sqlite_transactions(engine)
    return engine


def _switch_to_wal(cursor) -> None:
    """`PRAGMA journal_mode=WAL`, retried while the file is locked.

    The switch turns a read lock into an exclusive one; when two connections try at once,
    SQLite fails one of them at once with "database is locked" instead of calling the busy
    handler (waiting could deadlock), so processes that open a new database together (workers
    starting with the studio) would crash on their first connection.
    """
    deadline = time.monotonic() + SQLITE_WAIT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _install_sqlite_transactions(engine: Engine) -> None:
    """Make pysqlite issue real BEGIN IMMEDIATE for writes (see env-notes, Python 3.11).

    The stock driver starts transactions lazily and runs SELECTs outside them, which
    lets two processes claim the same job; with isolation_level=None we begin ourselves.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_WAIT_S * 1000)}")
        _switch_to_wal(cursor)
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


def db_now(conn: Connection, *, seconds_ago: float = 0.0):
    """The database's clock (minus `seconds_ago`) as an SQL expression, in UTC.

    Heartbeats and the stale cut-off both use it, so workers whose clocks disagree never
    judge each other's jobs dead (or alive) by their own time.
    """
    if is_sqlite(conn):
        if not seconds_ago:
            return func.strftime(_SQLITE_NOW, "now")
        return func.strftime(_SQLITE_NOW, "now", f"-{float(seconds_ago):.6f} seconds")
    now = func.now()
    return now - literal(timedelta(seconds=seconds_ago), Interval()) if seconds_ago else now


def transient(exc: BaseException) -> bool:
    """A database error that may pass: locked, busy, or a dropped or reset connection."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retried(fn):
    """Run `fn` (one whole transaction) again after a passing database error, with backoff.

    Each call opens and commits its own transaction, so a retry starts from a clean state;
    anything else (a refused write, a bug) is raised at once.
    """

    @functools.wraps(fn)
    def again(*args, **kwargs):
        delay = 0.2
        for attempt in range(1, TRANSIENT_TRIES + 1):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                if attempt == TRANSIENT_TRIES or not transient(exc):
                    raise
                reason = str(exc.orig or exc).splitlines()[0][:200]
                log.warning(
                    "%s: database error (%s); trying again in %.1f s", fn.__name__, reason, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    return again


def _alembic_config():
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.scalar(text("SELECT version_num FROM alembic_version"))


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`; rows survive every step."""
    cfg = _alembic_config()
    # Alembic's config is an ini parser: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(False).replace("%", "%%"))
    target = head_revision() if revision == "head" else revision
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        current = _current_revision(conn)
        if current == target:
            return  # the usual case: nothing to do, and nothing to say
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    where = engine.url.render_as_string(True)
    if current is None:
        log.info("Created the database's tables (schema %s) in %s", target, where)
    else:
        log.info("Upgraded the database's schema from %s to %s in %s", current, target, where)
