"""Listing and search: a page of artifacts read from their rows alone.

A page is one indexed statement whatever the size of the library: the page itself (keyset
paging on the id, so a page never skips or repeats a row while others insert), with the
aliases of each artifact on it and the total of a listing of everything or of one kind
(the totals the database keeps). A listing with other filters counts its matches in a
second statement. Nothing reads config, recipes or tensor rows: the sizes a listing
prints and filters on are stored on the row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from sqlalchemy import JSON, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from zoo.db import graph
from zoo.db.entities import ArtifactSummary
from zoo.db.models import Alias, Artifact, ArtifactTotal
from zoo.errors import InvalidInputError

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


def like_pattern(glob: str) -> str:
    """A LIKE pattern (escape ``\\``) for a glob; a glob without wildcards matches as a
    substring.

    Example:
        >>> like_pattern("bert*-l2_*")
        'bert%-l2\\\\_%'
    """
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = escaped.replace("*", "%").replace("?", "_")
    if "*" not in glob and "?" not in glob:
        pattern = f"%{pattern}%"
    return pattern.lower()


def _utc(value: datetime) -> datetime:
    # SQLite keeps the UTC wall time zoo writes, without an offset: compare in UTC.
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def conditions(f: Filters) -> list:
    conds = []
    if f.kind:
        conds.append(Artifact.kind == f.kind)
    if f.family:
        conds.append(Artifact.family == f.family)
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
        if low is not None:
            conds.append(column >= low)
        if high is not None:
            conds.append(column <= high)
    if f.derived_from is not None:
        conds.append(
            and_(
                Artifact.id.in_(graph.reachable(f.derived_from, up=False)),
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


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise InvalidInputError(
            f"{cursor!r} is not a listing cursor; pass the `next` value a previous page gave."
        )
    return int(cursor)


def page(
    session: Session,
    filters: Filters,
    *,
    limit: int | None,
    after: str | None = None,
    newest_first: bool = True,
) -> tuple[list[ArtifactSummary], int, str | None]:
    """(items, total matches, cursor of the next page or None). ``limit`` None: all."""
    conds = conditions(filters)
    stored = _stored_total(filters)
    columns = [*_COLUMNS, _aliases(session.get_bind().dialect.name).label("aliases")]
    if stored is not None:
        columns.append(stored.scalar_subquery().label("total"))
    query = select(*columns).where(*conds)
    last = parse_cursor(after)
    if last is not None:
        query = query.where(Artifact.id < last if newest_first else Artifact.id > last)
    query = query.order_by(Artifact.id.desc() if newest_first else Artifact.id)
    if limit is not None:
        query = query.limit(limit + 1)
    rows = session.execute(query).all()
    if stored is not None and rows:
        total = int(rows[0].total)
    else:  # no row to carry the total, or a filter whose matches are counted
        total = int(session.scalar(stored if stored is not None else _counted(conds)))
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


def _stored_total(filters: Filters) -> Select | None:
    """The total of a listing of everything or of one kind, from the totals the database
    keeps (one row per kind); None for other filters, whose matches are counted."""
    if replace(filters, kind=None, include_deleted=False) != Filters():
        return None
    kept = ArtifactTotal.kept
    column = kept + ArtifactTotal.removed if filters.include_deleted else kept
    query = select(func.coalesce(func.sum(column), 0))
    if filters.kind:
        query = query.where(ArtifactTotal.kind == filters.kind)
    return query


def _counted(conds: list) -> Select:
    return select(func.count()).select_from(Artifact).where(*conds)


def _aliases(dialect: str):
    """Each listed artifact's aliases as one JSON array column: a correlated subquery on
    the alias index, so that the aliases come with the page in the same statement."""
    collect = func.json_agg if dialect == "postgresql" else func.json_group_array
    return (
        select(collect(Alias.name, type_=JSON))
        .where(Alias.artifact_id == Artifact.id)
        .scalar_subquery()
    )
