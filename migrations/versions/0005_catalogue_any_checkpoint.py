"""catalogue any checkpoint: sources with no family, placeholders, the files around weights

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

- ``artifacts.family`` may be NULL: a checkpoint of a model_type no family resizes is
  catalogued all the same, and a placeholder (a Hub model a model card names as its
  base_model, not imported) has no family.
- ``artifact_files``: tokenizer files, generation and processor configs, chat templates
  and model cards, stored as blobs like tensors.

Downgrading forgets placeholders (with their edges and aliases) and the file rows (their
blobs become orphans for ``zoo gc``), and gives family-less sources the family ``''``,
which the older zoo catalogues and refuses to resize; upgrading makes ``''`` NULL again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zoo.db.downgrades import count, losing

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column("family", existing_type=sa.String(length=32), nullable=True)
    # No family is '' only where this revision's downgrade put it: NULL again.
    op.execute("UPDATE artifacts SET family = NULL WHERE family = ''")
    op.create_table(
        "artifact_files",
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_files_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "name", name=op.f("pk_artifact_files")),
    )
    with op.batch_alter_table("artifact_files", schema=None) as batch_op:
        batch_op.create_index("ix_artifact_files_digest", ["digest"], unique=False)


def downgrade() -> None:
    files = count(op.get_bind(), "artifact_files")
    placeholders = count(op.get_bind(), "artifacts", "kind = 'placeholder'")
    aliased = count(
        op.get_bind(),
        "aliases",
        "artifact_id IN (SELECT id FROM artifacts WHERE kind = 'placeholder')",
    )
    losing(revision, files and f"the records of stored tokenizer, config and card files ({files})")
    placed = f"the placeholders of base models ({placeholders}) with their edges"
    if aliased:
        placed += f" and aliases ({aliased})"
    losing(revision, placeholders and placed)
    with op.batch_alter_table("artifact_files", schema=None) as batch_op:
        batch_op.drop_index("ix_artifact_files_digest")
    op.drop_table("artifact_files")
    placeholders = "SELECT id FROM artifacts WHERE kind = 'placeholder'"
    op.execute(
        f"DELETE FROM edges WHERE parent_id IN ({placeholders}) OR child_id IN ({placeholders})"
    )
    for table in ("aliases", "family_defaults", "imports", "artifact_tensors"):
        op.execute(f"DELETE FROM {table} WHERE artifact_id IN ({placeholders})")
    op.execute("DELETE FROM artifacts WHERE kind = 'placeholder'")
    op.execute("UPDATE artifacts SET family = '' WHERE family IS NULL")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column("family", existing_type=sa.String(length=32), nullable=False)
