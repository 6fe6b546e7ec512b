"""A new derived checkpoint's rows (the artifact, its tensors' records and its edge from
its parent), written on the database driver's own connection.

A derived record is the registry's most frequent write (every `zoo materialize`), and
through SQLAlchemy's session it cost several times what the database takes: recording a
tiny model's derived checkpoint took 1.1 ms on SQLite and 2.2 ms on PostgreSQL (a 2-core
Xeon), 0.7 ms and 1.1 ms here. Here it is one statement on PostgreSQL (the rows inserted
by a data-modifying WITH, in the statement's own transaction) and one transaction of
plain statements on SQLite. The values are the ones :func:`zoo.db.queries.artifact_values`
and :func:`zoo.db.queries.edge_values` give the general path, passed through each column
type's own conversion for the dialect, so a row written here reads back as one written
there, and holds the same stored text (tests compare them).

Only the common case is written here: new content under a parent still kept, its name
free. Anything else (the content recorded already, the name an artifact's or an alias's,
a database busy, full or gone) writes nothing here and is left to the general path
(:meth:`zoo.api.registry.Registry.get_or_create`), which retries and reports as every write
does.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any

from sqlalchemy.engine import Engine

from zoo.db.models import Artifact, Edge

# The columns written, in the order of :func:`zoo.db.queries.artifact_values`.
ARTIFACT_COLUMNS = (
    "kind",
    "name",
    "family",
    "content_hash",
    "config_json",
    "info_json",
    "virtual",
    "created_at",
    "created_by",
    "deleted_at",
    "tensor_count",
    "nbytes",
    "layers",
    "hidden",
    "weights_key",
    "copy_key",
)
TENSOR_COLUMNS = ("name", "dtype", "shape_json", "nbytes", "digest")
EDGE_COLUMNS = ("relation", "recipe_json", "zoo_version", "created_at", "created_by")


class Outcome(Enum):
    INSERTED = "inserted"
    PARENT_REMOVED = "parent removed"  # refused: nothing may hang under a removed parent
    GENERAL = "general"  # nothing written here: the general path decides


def insert_derived(
    engine: Engine,
    parent_id: int,
    artifact: dict[str, Any],
    tensors: list[dict[str, Any]],
    edge: dict[str, Any],
) -> tuple[Outcome, int | None]:
    """Insert a derived artifact's row, its tensor rows and the edge from ``parent_id``,
    if the parent is kept, no derived row holds the content and no alias has the name
    (an artifact's is refused by its unique key); ``(INSERTED, id)``. The
    parent's row is locked as the general path locks it (a `zoo rm --cascade` waits, then
    sees the child). ``artifact``: every column of :data:`ARTIFACT_COLUMNS`; ``tensors``:
    :data:`TENSOR_COLUMNS` each; ``edge``: :data:`EDGE_COLUMNS`."""
    dialect = engine.dialect
    # The statements below are written for these drivers' connections (psycopg's
    # Connection.execute, sqlite3's cursor); a database URL may name another driver
    # (postgresql+psycopg2://, postgresql+pg8000://): its record takes the general path.
    insert = _INSERTS.get((dialect.name, dialect.driver))
    if insert is None:
        return Outcome.GENERAL, None
    of_artifact, of_edge = _converters(dialect)
    values = {k: of_artifact[k](v) if k in of_artifact else v for k, v in artifact.items()}
    edge_row = {f"edge_{k}": of_edge[k](edge[k]) if k in of_edge else edge[k] for k in EDGE_COLUMNS}
    return insert(engine, parent_id, values, tensors, edge_row, dialect.loaded_dbapi.Error)


@functools.lru_cache(maxsize=4)
def _converters(dialect) -> tuple[dict[str, Any], dict[str, Any]]:
    """The artifact's and the edge's columns' bind conversions for ``dialect`` (SQLite:
    times as SQLAlchemy's text, booleans as integers), where they have one; the tensor
    rows' columns are text and integers, passed as they are."""

    def of(table, names):
        impls = {name: table.c[name].type.dialect_impl(dialect) for name in names}
        processors = {name: impl.bind_processor(dialect) for name, impl in impls.items()}
        return {name: p for name, p in processors.items() if p is not None}

    return of(Artifact.__table__, ARTIFACT_COLUMNS), of(Edge.__table__, EDGE_COLUMNS)


# The name is cast to its column's type where an alias's is compared with it: PostgreSQL
# deduces one type per parameter, and the insert's own use deduces character varying.
_PG_INSERT = f"""
WITH parent AS (
    SELECT id FROM artifacts WHERE id = %(parent_id)s AND deleted_at IS NULL
    FOR UPDATE OF artifacts
), holder AS (
    SELECT id FROM artifacts WHERE kind = %(kind)s AND content_hash = %(content_hash)s
), artifact AS (
    INSERT INTO artifacts ({", ".join(ARTIFACT_COLUMNS)})
    SELECT {", ".join(f"%({c})s" for c in ARTIFACT_COLUMNS)}
    FROM parent WHERE NOT EXISTS (SELECT 1 FROM holder)
    AND NOT EXISTS (SELECT 1 FROM aliases WHERE name = %(name)s::varchar)
    RETURNING id
), tensor_rows AS (
    INSERT INTO artifact_tensors (artifact_id, {", ".join(TENSOR_COLUMNS)})
    SELECT artifact.id, t.* FROM artifact, unnest(
        %(t_name)s::text[], %(t_dtype)s::text[], %(t_shape_json)s::text[],
        %(t_nbytes)s::bigint[], %(t_digest)s::text[]
    ) AS t
), edge AS (
    INSERT INTO edges (parent_id, child_id, {", ".join(EDGE_COLUMNS)})
    SELECT %(parent_id)s, artifact.id, {", ".join(f"%(edge_{c})s" for c in EDGE_COLUMNS)}
    FROM artifact
)
SELECT EXISTS (SELECT 1 FROM parent), EXISTS (SELECT 1 FROM holder),
    (SELECT id FROM artifact)
"""


def _insert_postgresql(engine, parent_id, values, tensors, edge_row, errors):
    params = {"parent_id": parent_id, **values, **edge_row}
    for column in TENSOR_COLUMNS:
        params[f"t_{column}"] = [t[column] for t in tensors]
    connection = engine.raw_connection()
    driver = connection.driver_connection
    try:
        # One statement is its own transaction: no BEGIN and COMMIT round trips.
        driver.autocommit = True
        try:
            live, held, new_id = driver.execute(_PG_INSERT, params).fetchone()
        finally:
            driver.autocommit = False
    except errors:
        connection.invalidate()  # whatever state it is in, it is not handed out again
        return Outcome.GENERAL, None
    finally:
        connection.close()
    if not live:
        return Outcome.PARENT_REMOVED, None
    if held or new_id is None:
        return Outcome.GENERAL, None
    return Outcome.INSERTED, new_id


_SQLITE_LIVE_AND_HELD = (
    "SELECT id, (SELECT h.id FROM artifacts h WHERE h.kind = :kind AND h.content_hash = "
    ":content_hash), (SELECT 1 FROM aliases WHERE name = :name) "
    "FROM artifacts WHERE id = :parent_id AND deleted_at IS NULL"
)
_SQLITE_ARTIFACT = (
    f"INSERT INTO artifacts ({', '.join(ARTIFACT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in ARTIFACT_COLUMNS)}) RETURNING id"
)
_SQLITE_TENSOR = (
    f"INSERT INTO artifact_tensors (artifact_id, {', '.join(TENSOR_COLUMNS)}) "
    f"VALUES (:artifact_id, {', '.join(':' + c for c in TENSOR_COLUMNS)})"
)
_SQLITE_EDGE = (
    f"INSERT INTO edges (parent_id, child_id, {', '.join(EDGE_COLUMNS)}) "
    f"VALUES (:parent_id, :child_id, {', '.join(':edge_' + c for c in EDGE_COLUMNS)})"
)


def _insert_sqlite(engine, parent_id, values, tensors, edge_row, errors):
    from zoo.db.engine import write_lock

    with write_lock(engine):
        connection = engine.raw_connection()
        try:
            cursor = connection.driver_connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")  # the write lock, as every writer takes it
                try:
                    found = cursor.execute(
                        _SQLITE_LIVE_AND_HELD, {"parent_id": parent_id, **values}
                    ).fetchone()
                    if found is None or found[1:] != (None, None):
                        cursor.execute("ROLLBACK")
                        return (Outcome.PARENT_REMOVED if found is None else Outcome.GENERAL), None
                    new_id = cursor.execute(_SQLITE_ARTIFACT, values).fetchone()[0]
                    cursor.executemany(
                        _SQLITE_TENSOR, [{"artifact_id": new_id, **t} for t in tensors]
                    )
                    cursor.execute(
                        _SQLITE_EDGE, {"parent_id": parent_id, "child_id": new_id, **edge_row}
                    )
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
            finally:
                cursor.close()
        except errors:
            connection.invalidate()
            return Outcome.GENERAL, None
        finally:
            connection.close()
    return Outcome.INSERTED, new_id


_INSERTS = {("postgresql", "psycopg"): _insert_postgresql, ("sqlite", "pysqlite"): _insert_sqlite}
