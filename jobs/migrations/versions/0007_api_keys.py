"""API keys: programs call the HTTP API (/v1/...) as the person who made the key.

Only the SHA-256 of a key is stored, never the key: a key is 32 random bytes from `secrets`,
so a fast hash cannot be reversed or guessed. The short public prefix finds the row and is
what the studio shows; a revoked key keeps its row (revoked_at set) so the list says so.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(200), index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sqlite_autoincrement=True,  # ids never reused (see 0004)
    )


def downgrade() -> None:
    op.drop_table("api_keys")
