"""weights key: the artifact a save_pretrained copy is made of, in one indexed look-up

An import asks whether the folder is a copy of a registered checkpoint (recorded on it)
or its base model saved on its own. Without a key it compared the folder with the
artifacts holding its matrices, at most 16 of them: thousands of artifacts that share a
base's weights under their own configs made each import read 16 of them. A source's or
derived checkpoint's row now holds the sha256 of its weights (names, dtypes, shapes and
digests; :func:`zoo.checkpoint.manifest.weights_key`), indexed. Existing rows are
backfilled from their tensor rows; the key follows from them, so going down loses
nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from zoo.checkpoint.manifest import weights_key

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_BATCH = 1000


class _Tensor(NamedTuple):
    name: str
    dtype: str
    shape: list[int]
    digest: str


def upgrade() -> None:
    # Not a batch: SQLite would copy the table and lose its triggers (0007).
    op.add_column("artifacts", sa.Column("weights_key", sa.String(length=64), nullable=True))
    op.create_index("ix_artifacts_weights_key", "artifacts", ["weights_key"], unique=False)
    bind = op.get_bind()
    ids = list(
        bind.execute(
            sa.text("SELECT id FROM artifacts WHERE kind IN ('source', 'derived') ORDER BY id")
        ).scalars()
    )
    statement = sa.text("UPDATE artifacts SET weights_key = :k WHERE id = :i")
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        tensors: dict[int, list[_Tensor]] = {i: [] for i in chunk}
        rows = bind.execute(
            sa.text(
                "SELECT artifact_id, name, dtype, shape_json, digest "
                "FROM artifact_tensors WHERE artifact_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": chunk},
        )
        for artifact_id, name, dtype, shape_json, digest in rows:
            tensors[artifact_id].append(_Tensor(name, dtype, json.loads(shape_json), digest))
        updates = [{"i": i, "k": weights_key(t)} for i, t in tensors.items()]
        bind.execute(statement, updates)


def downgrade() -> None:
    op.drop_index("ix_artifacts_weights_key", table_name="artifacts")
    op.drop_column("artifacts", "weights_key")
