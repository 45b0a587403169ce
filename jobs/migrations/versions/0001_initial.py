"""Jobs, their events, and adapters with their files.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("base_model", sa.String(500)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("heartbeat_at", Time),
        sa.Column("worker", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("eta_s", sa.Float),
        sa.Column("loss", sa.Float),
        sa.Column("message", sa.Text),
        sa.Column("adapter_id", sa.Integer),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "id"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("time", Time, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("base_model", sa.String(500)),
        sa.Column("base_revision", sa.String(200)),
        sa.Column("task", sa.String(32)),
        sa.Column("labels", sa.JSON),
        sa.Column("target_modules", sa.JSON),
        sa.Column("trainable_params", sa.BigInteger),
        sa.Column("metrics", sa.JSON),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(128)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="SET NULL"),
            unique=True,
        ),
        sa.Column("card", sa.Text),
        sa.Column("info", sa.JSON),
    )
    op.create_index("ix_adapters_base_model", "adapters", ["base_model"])
    op.create_index("ix_adapters_task", "adapters", ["task"])
    op.create_index("ix_adapters_owner", "adapters", ["owner"])
    op.create_table(
        "adapter_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "adapter_id",
            sa.Integer,
            sa.ForeignKey("adapters.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("adapter_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("adapter_files")
    op.drop_table("adapters")
    op.drop_table("job_events")
    op.drop_table("jobs")
