"""A job's wall-clock limit: the seconds one attempt may run, set when it is queued.

Kept in the job's row so that a worker on any machine applies the queuing studio's limit.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy (see 0002): a copy would cascade into job_events.
    op.add_column("jobs", sa.Column("max_seconds", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "max_seconds")
