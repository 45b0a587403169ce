"""Databases and data for the jobs suites: the `db_url` fixture (in conftest.py) gives every
test a fresh SQLite file and a fresh PostgreSQL database (CREATE DATABASE per test, dropped
afterwards) made here.

PostgreSQL comes from IA3_TEST_POSTGRES_URL (`make test` starts one). With CI=true a missing or
unreachable server FAILS the PostgreSQL tests; elsewhere they skip, saying how to run them.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
import warnings

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ia3engine.training.spec import TrainSpec
from jobs.db import dispose_engines

POSTGRES_ENV = "IA3_TEST_POSTGRES_URL"
HOW_TO = (
    f"set {POSTGRES_ENV} to a PostgreSQL URL whose role may CREATE DATABASE "
    "(e.g. postgresql+psycopg://app:app@127.0.0.1:55432/appdb), or run `make test`, which starts one"
)
DB_KINDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@functools.cache
def _postgres_problem() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return f"{POSTGRES_ENV} is not set"
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any driver error means: no usable server
        return f"PostgreSQL at {POSTGRES_ENV} is unreachable ({str(exc).splitlines()[0]})"
    return None


def require_postgres() -> str:
    """The admin URL, or fail (CI) / skip (elsewhere) with the reason and the fix."""
    problem = _postgres_problem()
    if problem:
        message = f"{problem}; {HOW_TO}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs PostgreSQL for the queue and registry suites: {message}")
        pytest.skip(message)
    return os.environ[POSTGRES_ENV]


def make_database(kind: str, tmp_path) -> tuple[str, callable]:
    """(url, cleanup) for a new empty database of `kind`."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ia3.db'}", lambda: None
    admin_url = require_postgres()
    name = f"ia3_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def cleanup():
        dispose_engines()
        try:
            _drop_database(admin, name)
        finally:
            admin.dispose()

    return url, cleanup


def _drop_database(admin, name: str, tries: int = 20) -> None:
    """DROP ... WITH (FORCE), retried: the test role may not terminate a backend of another role
    (an autovacuum worker that just entered the database), which leaves within moments. A
    database still there after the tries stays in the throwaway test cluster, with a warning."""
    for attempt in range(tries):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError as err:
            if attempt == tries - 1:
                warnings.warn(f"test database {name} was left behind: {err}", stacklevel=2)
                return
            time.sleep(0.25)


WORDS = "good great fine love best bad awful poor hate worst the movie film plot was is very not".split()
POSITIVE, NEGATIVE = WORDS[:5], WORDS[5:10]


def write_reviews(path, rows: int = 40) -> str:
    """A CSV of short 'reviews' whose label follows from the words used."""
    lines = ["text,label"]
    for i in range(rows):
        positive = i % 2 == 0
        words = POSITIVE if positive else NEGATIVE
        lines.append(
            f"the movie was {words[i % 5]} {words[(i + 2) % 5]},{'pos' if positive else 'neg'}"
        )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def small_spec(base, data, **fields) -> TrainSpec:
    """A few-step TrainSpec on a tiny base (6 steps, batch 8, 16 tokens, eval every 3)."""
    values = dict(model=base, data=data, steps=6, batch_size=8, max_length=16, eval_every=3)
    return TrainSpec(**(values | fields))
