"""registry identity: one id per registry, recorded in the blob stores it uses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "registry_identity",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_identity")),
    )
    op.bulk_insert(table, [{"id": str(uuid.uuid4()), "created_at": datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_table("registry_identity")


def recorded_data_lost(connection) -> str | None:
    """What the downgrade deletes that the registry recorded (see zoo.db.engine.downgrade)."""
    row = connection.exec_driver_sql("SELECT id FROM registry_identity").first()
    return f"the registry's id {row[0]}, which its blob stores' claims name" if row else None
