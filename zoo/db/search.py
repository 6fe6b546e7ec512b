"""Listing and search: a page of artifacts read from their rows alone.

A page is one indexed statement whatever the size of the library: the page itself (keyset
paging on the id, so a page never skips or repeats a row while others insert), with the
aliases of each artifact on it and the total of a listing of everything or of one kind
(the totals the database keeps). A listing with other filters counts its matches in a
second statement. Nothing reads config, recipes or tensor rows: the sizes a listing
prints and filters on are stored on the row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Select,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from zoo.db import graph
from zoo.db.entities import KINDS, ArtifactSummary, parse_cursor
from zoo.db.listing_sql import like_pattern
from zoo.db.models import Alias, Artifact, ArtifactTotal

_COLUMNS = (
    Artifact.id,
    Artifact.kind,
    Artifact.name,
    Artifact.family,
    Artifact.content_hash,
    Artifact.virtual,
    Artifact.created_at,
    Artifact.created_by,
    Artifact.deleted_at,
    Artifact.tensor_count,
    Artifact.nbytes,
    Artifact.layers,
    Artifact.hidden,
)


@dataclass(frozen=True)
class Filters:
    """What a listing keeps. Every field left None keeps everything."""

    kind: str | None = None
    family: str | None = None
    #: a config's model_type no family reads (t5): the checkpoints catalogued without a
    #: family whose config.json names it (any case)
    model_type: str | None = None
    include_deleted: bool = False
    #: a glob over the name and the aliases (``*`` any run, ``?`` one character), case
    #: insensitive; without a wildcard, names and aliases that contain it
    name: str | None = None
    min_layers: int | None = None
    max_layers: int | None = None
    min_hidden: int | None = None
    max_hidden: int | None = None
    #: the id of an artifact whose descendants (at any depth) are kept
    derived_from: int | None = None
    created_by: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


def _utc(value: datetime) -> datetime:
    # SQLite keeps the UTC wall time zoo writes, without an offset: compare in UTC.
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # within hours of year 1 or 9999: the calendar's end in UTC
        end = datetime.max if value.year > 1 else datetime.min
        return end.replace(tzinfo=timezone.utc)


def conditions(f: Filters, dialect: str) -> list:
    conds = []
    if f.kind:
        conds.append(Artifact.kind == f.kind)
    if f.family:
        conds.append(Artifact.family == f.family)
    if f.model_type:
        conds.append(Artifact.family.is_(None))
        conds.append(func.lower(_model_type(dialect)) == f.model_type.lower())
    if not f.include_deleted:
        conds.append(Artifact.deleted_at.is_(None))
    if f.name:
        pattern = like_pattern(f.name)
        alias_match = exists().where(
            Alias.artifact_id == Artifact.id, func.lower(Alias.name).like(pattern, escape="\\")
        )
        conds.append(or_(func.lower(Artifact.name).like(pattern, escape="\\"), alias_match))
    for column, low, high in (
        (Artifact.layers, f.min_layers, f.max_layers),
        (Artifact.hidden, f.min_hidden, f.max_hidden),
    ):
        # 64-bit parameters: PostgreSQL's columns are 32-bit, and a bound beyond them
        # compares (no match, or every one) rather than failing as out of range.
        if low is not None:
            conds.append(column >= literal(low, BigInteger))
        if high is not None:
            conds.append(column <= literal(high, BigInteger))
    if f.derived_from is not None:
        conds.append(
            and_(
                Artifact.id.in_(graph.reachable(f.derived_from, up=False, dialect=dialect)),
                Artifact.id != f.derived_from,
            )
        )
    if f.created_by:
        conds.append(Artifact.created_by == f.created_by)
    if f.created_after is not None:
        conds.append(Artifact.created_at >= _utc(f.created_after))
    if f.created_before is not None:
        conds.append(Artifact.created_at < _utc(f.created_before))
    return conds


def _model_type(dialect: str):
    """The model_type of an artifact's config.json (text in both back ends' columns)."""
    if dialect == "postgresql":
        return func.json_extract_path_text(cast(Artifact.config_json, JSON), "model_type")
    return func.json_extract(Artifact.config_json, "$.model_type")


def page(
    session: Session,
    filters: Filters,
    *,
    limit: int | None,
    after: str | None = None,
    newest_first: bool = True,
) -> tuple[list[ArtifactSummary], int, str | None]:
    """(items, total matches, cursor of the next page or None). ``limit`` None: all."""
    dialect = session.get_bind().dialect.name
    query, params, stored = statement(
        dialect, filters, limit=limit, after=parse_cursor(after), newest_first=newest_first
    )
    # On the session's connection: these are plain column reads, and the ORM's execution
    # and result machinery costs more per row than the row itself.
    connection = session.connection()
    rows = connection.execute(query, params).all()
    if stored and rows:
        total = int(rows[0].total)
    elif stored:  # no row to carry the total
        by_kind = filters.kind is not None
        kind = {"kind": filters.kind} if by_kind else {}
        total = int(connection.scalar(_stored_total(filters.include_deleted, by_kind), kind))
    else:  # a filter whose matches are counted
        total = int(connection.scalar(_counted(conditions(filters, dialect))))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    items = [
        ArtifactSummary(
            id=r.id,
            kind=r.kind,
            name=r.name,
            family=r.family,
            content_hash=r.content_hash,
            virtual=r.virtual,
            created_at=_utc(r.created_at),
            created_by=r.created_by,
            deleted=r.deleted_at is not None,
            tensor_count=r.tensor_count,
            nbytes=r.nbytes,
            layers=r.layers,
            hidden=r.hidden,
            aliases=tuple(sorted(r.aliases or ())),
        )
        for r in rows
    ]
    return items, total, (str(rows[-1].id) if more else None)


def statement(
    dialect: str,
    filters: Filters,
    *,
    limit: int | None,
    after: int | None,
    newest_first: bool,
) -> tuple[Select, dict, bool]:
    """(the page's statement, its parameters, whether its rows carry the total).

    A listing of everything or of one kind, the one `zoo ls` and the web page open with,
    runs a statement built once per shape with its values as parameters: building and
    keying a statement in SQLAlchemy takes longer than the database takes to answer it.
    Other filters build theirs each time, and their total is counted apart.
    """
    params: dict = {}
    if limit is not None:
        params["limit"] = limit + 1  # one more tells whether a next page exists
    if after is not None:
        params["after"] = after
    if replace(filters, kind=None, include_deleted=False) == Filters():
        if filters.kind is not None:
            params["kind"] = filters.kind
        query = _listing(
            dialect,
            by_kind=filters.kind is not None,
            include_deleted=filters.include_deleted,
            after=after is not None,
            limited=limit is not None,
            newest_first=newest_first,
        )
        return query, params, True
    query = _ordered(
        select(*_COLUMNS).where(*conditions(filters, dialect)),
        after is not None,
        limit is not None,
        newest_first,
    )
    return _with_aliases(dialect, query, newest_first), params, False


@functools.lru_cache(maxsize=64)
def _listing(
    dialect: str,
    *,
    by_kind: bool,
    include_deleted: bool,
    after: bool,
    limited: bool,
    newest_first: bool,
) -> Select:
    total = _stored_total(include_deleted, by_kind).scalar_subquery()
    query = select(*_COLUMNS, total.label("total"))
    if by_kind:
        query = query.where(Artifact.kind == bindparam("kind"))
    if not include_deleted:
        query = query.where(Artifact.deleted_at.is_(None))
    return _with_aliases(dialect, _ordered(query, after, limited, newest_first), newest_first)


def _ordered(query: Select, after: bool, limited: bool, newest_first: bool) -> Select:
    """Keyset paging on the id: ``:after`` is the last id of the previous page."""
    if after:
        last = bindparam("after", type_=BigInteger)  # a cursor past 32 bits: see above
        query = query.where(Artifact.id < last if newest_first else Artifact.id > last)
    query = query.order_by(Artifact.id.desc() if newest_first else Artifact.id)
    return query.limit(bindparam("limit")) if limited else query


def _stored_total(include_deleted: bool, by_kind: bool) -> Select:
    """The total of a listing of everything or of one kind (``:kind``), from the totals
    the database keeps (one row per kind)."""
    kept = ArtifactTotal.kept
    column = kept + ArtifactTotal.removed if include_deleted else kept
    query = select(func.coalesce(func.sum(column), 0))
    if by_kind:
        return query.where(ArtifactTotal.kind == bindparam("kind"))
    # By the key (see EVERY_KIND_TOTAL), with the kinds written out as in the quick pages.
    return query.where(ArtifactTotal.kind.in_([literal_column(f"'{k}'") for k in KINDS]))


def _counted(conds: list) -> Select:
    return select(func.count()).select_from(Artifact).where(*conds)


def _with_aliases(dialect: str, page: Select, newest_first: bool) -> Select:
    """``page`` (ordered, limited) with each artifact's aliases as one JSON array column
    ``aliases``, in the same statement.

    SQLite: a correlated subquery on the alias index. PostgreSQL plans such a subquery
    once for every row, and for an alias table of a few pages it picks a scan of the
    whole table each time (380 aliases made a page of 50 cost twice as much); so there
    the page's aliases are gathered once, joined to the page's ids, whatever plan the
    join gets (one scan, or one index probe per row)."""
    if dialect != "postgresql":
        aliases = (
            select(func.json_group_array(Alias.name, type_=JSON))
            .where(Alias.artifact_id == Artifact.id)
            .scalar_subquery()
        )
        return page.add_columns(aliases.label("aliases"))
    rows = page.cte("page")
    named = (
        select(Alias.artifact_id, func.json_agg(Alias.name, type_=JSON).label("names"))
        .join(rows, Alias.artifact_id == rows.c.id)
        .group_by(Alias.artifact_id)
        .cte("named")
    )
    return (
        select(*rows.c, named.c.names.label("aliases"))
        .outerjoin(named, named.c.artifact_id == rows.c.id)
        .order_by(rows.c.id.desc() if newest_first else rows.c.id)
    )
