"""import origin index: a Hub repository id names what was imported from it

``ORG/NAME`` (or ``hf://ORG/NAME``), wherever a command or the server takes a name, means
the live artifact imported last from that Hub repository's default branch (else from a
pinned revision), found by its import's origin. Without an index every such look-up, and
every import whose model card names a ``base_model``, reads the whole imports table: one
row per import in the library. A hash index on PostgreSQL (equality is all it answers; a
btree entry could not hold every 1024-character origin). ``from_main`` says whether an
import asked for the default branch; imports recorded before it are taken as such.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("imports") as batch:
        batch.add_column(
            sa.Column("from_main", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_index(
        "ix_imports_origin", "imports", ["origin"], unique=False, postgresql_using="hash"
    )


def downgrade() -> None:
    n = count(op.get_bind(), "imports", "NOT from_main")
    losing(revision, n and f"which imports ({n}) were of a pinned revision, not the default branch")
    op.drop_index("ix_imports_origin", table_name="imports")
    with op.batch_alter_table("imports") as batch:
        batch.drop_column("from_main")
