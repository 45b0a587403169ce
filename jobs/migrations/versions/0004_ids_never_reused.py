"""Ids are never reused: every table with an integer id becomes AUTOINCREMENT on SQLite.

Without it SQLite gives a new row the highest id + 1, so deleting the newest adapter (or job)
hands its id to the next one: a cache, a link or a person holding the old id would reach the
new one. PostgreSQL sequences never go back; they are only moved past any id written
explicitly (a copied database), so the next id is always above every id ever stored.

SQLite cannot alter a primary key in place, and dropping a table with foreign keys on would
cascade into its children, so every table is copied aside, dropped children first, created
again from its own CREATE statement (with AUTOINCREMENT) parents first, and filled back; the
highest id so far then seeds sqlite_sequence.

Revision ID: 0004
Revises: 0003
"""

import re

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID_COLUMN = re.compile(r"\(\s*id INTEGER NOT NULL,")
_ID_KEY = re.compile(r",\s*PRIMARY KEY \(id\)")


def _with_autoincrement(sql: str) -> str:
    if "AUTOINCREMENT" in sql or not (_ID_COLUMN.search(sql) and _ID_KEY.search(sql)):
        return sql
    sql = _ID_KEY.sub("", sql, count=1)
    return _ID_COLUMN.sub("(\n\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,", sql, count=1)


def _parents_first(conn, tables: list[str]) -> list[str]:
    """The tables ordered so that every table comes after the tables it references."""
    refs = {
        t: {row[2] for row in conn.exec_driver_sql(f'PRAGMA foreign_key_list("{t}")')} - {t}
        for t in tables
    }
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in ordered and refs[t] <= set(ordered)]
        if not ready:  # a reference cycle: keep the remaining order (foreign keys stay valid)
            ready = [t for t in tables if t not in ordered]
        ordered += ready
    return ordered


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        _sequences_past_every_id(conn)
        return
    if conn.dialect.name != "sqlite":
        return
    rows = conn.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' AND tbl_name != 'alembic_version'"
    ).fetchall()
    creates = {name: sql for kind, name, _, sql in rows if kind == "table"}
    if all(_with_autoincrement(sql) == sql for sql in creates.values()):
        return  # a database made after this change, or converted already
    indexes = [sql for kind, _, _, sql in rows if kind == "index"]
    tables = _parents_first(conn, sorted(creates))
    for table in tables:
        conn.exec_driver_sql(f'CREATE TABLE "_ia3_old_{table}" AS SELECT * FROM "{table}"')
    for table in reversed(tables):  # children first: no cascade reaches a row we keep
        conn.exec_driver_sql(f'DROP TABLE "{table}"')
    for table in tables:
        conn.exec_driver_sql(_with_autoincrement(creates[table]))
    for sql in indexes:
        conn.exec_driver_sql(sql)
    for table in tables:
        conn.exec_driver_sql(f'INSERT INTO "{table}" SELECT * FROM "_ia3_old_{table}"')
        conn.exec_driver_sql(f'DROP TABLE "_ia3_old_{table}"')


def downgrade() -> None:
    pass  # AUTOINCREMENT is harmless to the older schema; the tables stay as they are


def _sequences_past_every_id(conn) -> None:
    """Each id sequence continues above its table's highest id (rows inserted with ids)."""
    tables = conn.exec_driver_sql(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND column_name = 'id' AND column_default LIKE 'nextval(%%'"
    ).fetchall()
    for (table,) in tables:
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
            f'GREATEST((SELECT max(id) FROM "{table}"), 1), '
            f'(SELECT max(id) FROM "{table}") IS NOT NULL)'
        )
