"""A page of a listing (of everything, of one kind, or with the filters of
:mod:`zoo.db.listing_sql`), read from a SQLite registry with the standard library's
sqlite3 alone.

This is what `zoo ls` reads, and the statement :mod:`zoo.db.search` builds with
SQLAlchemy for the same listing, written out: importing SQLAlchemy takes longer than the
answer (0.2 s of a 0.4 s `zoo ls` process on a 2-core Xeon), and a listing needs none
of its machinery. Tests check that both give the same pages.
"""

from __future__ import annotations

import json
import sqlite3

from zoo.db import listing_sql
from zoo.db.entities import EVERY_KIND_TOTAL, ArtifactSummary, summary_from_row
from zoo.db.sqlite_file import BUSY_TIMEOUT_S, SQLiteFile, head_revision

_COLUMNS = (
    "a.id, a.kind, a.name, a.family, a.content_hash, a.virtual, a.created_at, a.created_by, "
    "a.deleted_at IS NOT NULL, a.tensor_count, a.nbytes, a.layers, a.hidden"
)
# Each artifact's aliases as one JSON array, from the alias index.
_ALIASES = "(SELECT json_group_array(al.name) FROM aliases al WHERE al.artifact_id = a.id)"


def read_page(
    db: SQLiteFile,
    *,
    kind: str | None,
    include_deleted: bool,
    limit: int | None,
    after: int | None,
    newest_first: bool,
    **filters,
) -> tuple[list[ArtifactSummary], int, str | None] | None:
    """(items, total, cursor of the next page or None), as :func:`zoo.db.search.page`
    gives them; None when the file's schema is not the one this zoo reads (the engine's
    schema check then says what to do). ``filters``: :data:`zoo.db.listing_sql.QUICK_FILTERS`.

    Raises:
        sqlite3.Error: the file could not be read.
    """
    params: list = []

    def arg(value: object) -> str:
        params.append(value)
        return "?"

    connection = sqlite3.connect(db.uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute("BEGIN")  # the version and the page from one snapshot
        stamped = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        if stamped != [(head_revision(),)]:
            return None
        where = listing_sql.conditions(arg, kind=kind, include_deleted=include_deleted, **filters)
        if listing_sql.counted(filters):  # the matches of the same conditions, counted
            total_sql = "SELECT count(*) FROM artifacts a WHERE " + " AND ".join(where)
            total_params = list(params)
        else:
            total_sql, total_params = _total(kind, include_deleted)
        if after is not None:
            where.append("a.id < ?" if newest_first else "a.id > ?")
            params.append(after)
        sql = f"SELECT {_COLUMNS}, {_ALIASES}, ({total_sql}) FROM artifacts a"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY a.id DESC" if newest_first else " ORDER BY a.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit + 1)  # one more tells whether a next page exists
        rows = connection.execute(sql, [*total_params, *params]).fetchall()
        if rows:
            total = int(rows[0][-1])
        else:  # no row to carry the total
            total = int(connection.execute(total_sql, total_params).fetchone()[0])
    finally:
        connection.close()
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    items = [summary_from_row((*row[:13], json.loads(row[13]))) for row in rows]
    return items, total, (str(items[-1].id) if more else None)


def _total(kind: str | None, include_deleted: bool) -> tuple[str, list]:
    """The total the database keeps for everything or for one kind (one row per kind)."""
    column = "t.kept + t.removed" if include_deleted else "t.kept"
    sql = f"SELECT coalesce(sum({column}), 0) FROM artifact_totals t"
    if kind is None:
        return f"{sql} WHERE {EVERY_KIND_TOTAL}", []
    return sql + " WHERE t.kind = ?", [kind]
