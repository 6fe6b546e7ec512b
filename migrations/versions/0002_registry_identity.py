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

from zoo.db.downgrades import count, losing

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
    if count(op.get_bind(), "registry_identity"):
        losing(revision, "the registry's id, which its blob stores' claims name")
    op.drop_table("registry_identity")
