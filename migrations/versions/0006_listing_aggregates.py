"""listing aggregates: tensor count, bytes, layers and hidden size on the artifact row

A page of `zoo ls` prints and filters on these; stored with the row, they are never
recomputed from tensor rows at read time. Existing rows are backfilled here: counts and
bytes from their tensor rows, sizes from their config (a derived checkpoint's is its
target config), read the way every family reads it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# gpt2 spells them n_layer / n_embd; bert, roberta, llama, vit and deit as below.
_LAYER_KEYS = ("num_hidden_layers", "n_layer")
_HIDDEN_KEYS = ("hidden_size", "n_embd")
_BATCH = 1000


def _first_int(config: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tensor_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("nbytes", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("layers", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hidden", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_artifacts_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_artifacts_created_by"), ["created_by"], unique=False)
        batch_op.create_index("ix_artifacts_deleted_at_kind", ["deleted_at", "kind"], unique=False)

    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE artifacts SET "
            "tensor_count = (SELECT COUNT(*) FROM artifact_tensors t "
            "WHERE t.artifact_id = artifacts.id), "
            "nbytes = (SELECT COALESCE(SUM(t.nbytes), 0) FROM artifact_tensors t "
            "WHERE t.artifact_id = artifacts.id)"
        )
    )
    rows = bind.execute(sa.text("SELECT id, config_json FROM artifacts")).all()
    updates = []
    for artifact_id, config_json in rows:
        config = json.loads(config_json) if config_json else None
        if not isinstance(config, dict):
            continue
        layers, hidden = _first_int(config, _LAYER_KEYS), _first_int(config, _HIDDEN_KEYS)
        if layers is not None or hidden is not None:
            updates.append({"i": artifact_id, "l": layers, "h": hidden})
    statement = sa.text("UPDATE artifacts SET layers = :l, hidden = :h WHERE id = :i")
    for start in range(0, len(updates), _BATCH):
        bind.execute(statement, updates[start : start + _BATCH])


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_deleted_at_kind")
        batch_op.drop_index(batch_op.f("ix_artifacts_created_by"))
        batch_op.drop_index(batch_op.f("ix_artifacts_created_at"))
        batch_op.drop_column("hidden")
        batch_op.drop_column("layers")
        batch_op.drop_column("nbytes")
        batch_op.drop_column("tensor_count")
