"""output journal: output folders being written, so fsck finds what a killed writer left

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outputs")),
    )


def downgrade() -> None:
    # Each entry is an output being written, or left by a killed writer for zoo fsck.
    n = count(op.get_bind(), "outputs")
    losing(revision, n and f"the output journal's entries ({n})")
    op.drop_table("outputs")
