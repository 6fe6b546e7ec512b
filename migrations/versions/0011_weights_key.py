"""weights and copy keys: the artifact a save_pretrained copy is made of, in one look-up

An import asks whether the folder is a copy of a registered checkpoint (recorded on it)
or its base model saved on its own. Without a key it compared the folder with the
artifacts holding its matrices, at most 16 of them: thousands of artifacts that share a
base's weights under their own configs made each import read 16 of them. A source's or
derived checkpoint's row now holds the sha256 of its weights (names, dtypes, shapes and
digests; :func:`zoo.checkpoint.manifest.weights_key`) and that of its weights and config
less what every save writes (:func:`zoo.checkpoint.manifest.copy_key`), both indexed.
Existing rows are backfilled from their tensor rows and configs; the keys follow from
them, so going down loses nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from zoo.checkpoint.manifest import copy_key, weights_key

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
    for column in ("weights_key", "copy_key"):
        op.add_column("artifacts", sa.Column(column, sa.String(length=64), nullable=True))
        op.create_index(f"ix_artifacts_{column}", "artifacts", [column], unique=False)
    bind = op.get_bind()
    configs = dict(
        bind.execute(
            sa.text(
                "SELECT id, config_json FROM artifacts WHERE kind IN ('source', 'derived') "
                "ORDER BY id"
            )
        ).all()
    )
    ids = list(configs)
    statement = sa.text("UPDATE artifacts SET weights_key = :k, copy_key = :c WHERE id = :i")
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
        updates = []
        for i, t in tensors.items():
            config = json.loads(configs[i]) if configs[i] else None
            key = weights_key(t)
            updates.append({"i": i, "k": key, "c": copy_key(config, key)})
        bind.execute(statement, updates)


def downgrade() -> None:
    for column in ("copy_key", "weights_key"):
        op.drop_index(f"ix_artifacts_{column}", table_name="artifacts")
        op.drop_column("artifacts", column)
