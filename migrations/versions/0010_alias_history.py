"""alias history: where each alias pointed, since when and set by whom

``zoo tag`` moves an alias (``prod``) from one artifact to another; the alias row holds
only its current target. This table keeps one row per setting, so anyone can audit which
checkpoint ``prod`` named on a given day. A row without an artifact says the alias went
with the artifact it named (``zoo gc`` forgot it). Each alias set before it gets one row, its
current target, at an unknown time by an unknown user (the alias row keeps when the alias
was created, not when it last moved).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("artifact_name", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("set_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_history")),
    )
    op.create_index("ix_alias_history_alias_id", "alias_history", ["alias", "id"], unique=False)
    op.execute(
        "INSERT INTO alias_history (alias, artifact_name, kind, content_hash, set_at, set_by) "
        "SELECT aliases.name, artifacts.name, artifacts.kind, artifacts.content_hash, "
        "NULL, NULL FROM aliases JOIN artifacts ON artifacts.id = aliases.artifact_id "
        "ORDER BY aliases.created_at, aliases.name"
    )


def downgrade() -> None:
    n = count(op.get_bind(), "alias_history")
    losing(revision, n and f"the aliases' history ({n} {'row' if n == 1 else 'rows'})")
    op.drop_index("ix_alias_history_alias_id", table_name="alias_history")
    op.drop_table("alias_history")
