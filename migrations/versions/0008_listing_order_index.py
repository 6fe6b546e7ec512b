"""listing order index: the kept artifacts in id order

A listing of every kept artifact reads ``deleted_at IS NULL ORDER BY id``. Without
planner statistics (SQLite gathers none by itself, so a user's library has none) SQLite
answered it from ``ix_artifacts_deleted_at_kind``: every kept row, then a sort, which
grows with the library. An index on ``(deleted_at, id)`` hands the page over in order,
so a page reads its 50 rows whatever the library's size.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_artifacts_deleted_at_id", "artifacts", ["deleted_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_artifacts_deleted_at_id", table_name="artifacts")
