"""Share links: an adapter's owner may open its page to anyone holding a secret token.

One row per shared adapter; deleting the adapter deletes its link. The adapter's sha256 is
kept too, so a link never opens a different adapter that later took the same id.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_shares",
        sa.Column(
            "adapter_id",
            sa.Integer,
            sa.ForeignKey("adapters.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("adapter_sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("adapter_shares")
