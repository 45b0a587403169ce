"""Job kinds and what a finished job leaves beside its adapter.

- kind: "train" (every job before this) or "predict" (an adapter, or the base alone, run over an
  uploaded file);
- insights: what the worker measured on the validation rows at the end of training (per-class
  scores, confusion matrix, wrong rows, the untuned start beside it; generations), so that the
  studio draws them from the database without loading a model;
- result_blob_id: the file a predict job wrote (a row of the datasets table, owned like an upload).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy (see 0002): a copy would cascade into job_events.
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
    op.add_column("jobs", sa.Column("insights", sa.JSON, nullable=True))
    op.add_column("jobs", sa.Column("result_blob_id", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "result_blob_id")
    op.drop_column("jobs", "insights")
    op.drop_column("jobs", "kind")
