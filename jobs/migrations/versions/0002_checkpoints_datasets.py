"""Checkpoints and uploaded datasets in the database; a per-job attempt limit.

A worker on another machine then needs nothing but the database URL to resume a job.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])
    # Plain ADD COLUMN, never a batch copy: on SQLite a copy drops the jobs table, and
    # with foreign keys on that would cascade into job_events.
    op.add_column("jobs", sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"))
    op.add_column("jobs", sa.Column("data_blob_id", sa.Integer))
    op.add_column("jobs", sa.Column("eval_blob_id", sa.Integer))


def downgrade() -> None:
    op.drop_column("jobs", "eval_blob_id")
    op.drop_column("jobs", "data_blob_id")
    op.drop_column("jobs", "max_attempts")
    op.drop_index("ix_datasets_sha256", "datasets")
    op.drop_table("datasets")
    op.drop_table("checkpoints")
