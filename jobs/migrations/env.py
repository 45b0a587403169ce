"""Alembic environment for the jobs database: online migrations on the app's connection.

jobs.db.migrate() passes its own connection (already inside a locked transaction), so
there is no fileConfig() here: it would silence the application's loggers.
"""

from alembic import context
from sqlalchemy import create_engine

from jobs.models import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # Run from the alembic command line: build an engine from the configured URL.
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
