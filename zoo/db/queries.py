"""Query functions. Each takes a session owned by the caller and never commits."""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import operator
from collections.abc import Iterable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session, make_transient_to_detached

from zoo.db.entities import (
    KINDS,
    AliasHistoryPage,
    AliasSetting,
    ArtifactInfo,
    EdgeInfo,
    FileRecord,
    ImportInfo,
    TensorRecord,
    check_lookup,
    loads,
)
from zoo.db.models import (
    Alias,
    AliasHistory,
    Artifact,
    ArtifactFile,
    ArtifactTensor,
    Edge,
    FamilyDefault,
    ImportRecord,
    RegistryIdentity,
)
from zoo.errors import AmbiguousNameError, ConflictError, InvalidInputError, NotFoundError
from zoo.hub import is_repo_id


def now() -> datetime:
    return datetime.now(timezone.utc)


def dumps(obj: Any) -> str:
    """Canonical JSON for stored documents."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def aware(value: datetime) -> datetime:
    """A stored time in UTC, as zoo writes it and every command prints it: SQLite returns
    naive datetimes even for timezone-aware columns, PostgreSQL times in the session's
    zone (PGTZ, the server's setting), and scripts compare the strings."""
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


# The statements every write and every `show` runs, built once with their values as
# parameters: building and keying a statement in SQLAlchemy takes longer than the database
# takes to answer it, and a tag or a link runs several.
_OWNER = bindparam("artifact_id")


def _parts_of_statement() -> Select:
    """An artifact's imports, aliases and files in one round trip (a tag, a link and every
    `show` read them): one UNION ALL whose rows say which part they are (0, 1, 2), in the
    order each part is listed (imports by id, aliases and files by name). The first branch
    gives the columns their types (the timestamp and the size)."""
    # Typed in SQL too: PostgreSQL types a column NULL in the first two branches as text.
    none_n = cast(null(), ArtifactFile.nbytes.type)
    imports = select(
        literal_column("0").label("part"),
        ImportRecord.id.label("k"),
        ImportRecord.origin.label("a"),
        ImportRecord.revision.label("b"),
        ImportRecord.files_json.label("c"),
        ImportRecord.imported_by.label("d"),
        none_n.label("n"),
        ImportRecord.imported_at.label("at"),
    ).where(ImportRecord.artifact_id == _OWNER)
    aliases = select(
        literal_column("1"), null(), Alias.name, null(), null(), null(), null(), null()
    ).where(Alias.artifact_id == _OWNER)
    files = select(
        literal_column("2"),
        null(),
        ArtifactFile.name,
        ArtifactFile.role,
        ArtifactFile.digest,
        null(),
        ArtifactFile.nbytes,
        null(),
    ).where(ArtifactFile.artifact_id == _OWNER)
    parts = union_all(imports, aliases, files).subquery()
    return select(parts).order_by(parts.c.part, parts.c.k, parts.c.a)


# Columns, not ORM objects: these rows become plain records at once.
_PARTS_OF = _parts_of_statement()
_TENSORS_OF = (
    select(
        ArtifactTensor.name,
        ArtifactTensor.dtype,
        ArtifactTensor.shape_json,
        ArtifactTensor.nbytes,
        ArtifactTensor.digest,
    )
    .where(ArtifactTensor.artifact_id == _OWNER)
    .order_by(ArtifactTensor.name)
)
_FILES_OF = (
    select(ArtifactFile.name, ArtifactFile.role, ArtifactFile.nbytes, ArtifactFile.digest)
    .where(ArtifactFile.artifact_id == _OWNER)
    .order_by(ArtifactFile.name)
)
# Whether ``:alias`` is a registry name (a tag refused, to say why).
IS_NAME = select(select(Artifact.id).where(Artifact.name == bindparam("alias")).exists())
EDGE_COLUMNS = (
    Edge.id,
    Edge.parent_id,
    Edge.child_id,
    Edge.relation,
    Edge.recipe_json,
    Edge.zoo_version,
    Edge.created_at,
    Edge.created_by,
)
_EDGE = select(*EDGE_COLUMNS).where(
    Edge.parent_id == bindparam("parent_id"),
    Edge.child_id == bindparam("child_id"),
    Edge.relation == bindparam("relation"),
)


def among(column, dialect: str, name: str = "ids"):
    """``column IN :name``, where ``:name`` is a list given at execution. On PostgreSQL it
    is one array parameter (``= ANY``): the statement's text is then the same whatever the
    list's length, so psycopg prepares it once, where an expanded IN of n values is a new
    statement for every n, rendered and cast value by value."""
    if dialect == "postgresql":
        from sqlalchemy import Integer, any_
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(Integer)))
    return column.in_(bindparam(name, expanding=True))


def to_info(
    session: Session,
    row: Artifact,
    *,
    tensors: bool = True,
    same_content: bool = False,
    parts: bool = True,
) -> ArtifactInfo:
    """``row`` as a plain record; ``same_content`` also lists the other kept artifacts
    that hold exactly its content (one query more, so only where it is shown); without
    ``parts``, its imports, aliases and files are left out (one query less, for a caller
    that reads none of them)."""
    found: tuple[list, list, list] = ([], [], [])
    if parts:
        for p in session.execute(_PARTS_OF, {"artifact_id": row.id}):
            found[p.part].append(p)
    imports, aliases, files = found
    return _info(
        row,
        aliases=tuple(a.a for a in aliases),
        imports=tuple(ImportInfo(i.a, i.b, json.loads(i.c), aware(i.at), i.d) for i in imports),
        files=tuple(FileRecord(f.a, f.b, f.n, f.c) for f in files),
        tensors=tuple(tensor_records(session, row.id)) if tensors else (),
        same_content=tuple((r.kind, r.name) for r in coinciding(session, row))
        if same_content
        else (),
    )


def new_info(
    session: Session, row: Artifact | SimpleNamespace, *, tensors: bool = True
) -> ArtifactInfo:
    """:func:`to_info` of a row this transaction just inserted, with no read: no alias,
    import or file refers to it yet."""
    return _info(row, tensors=tuple(tensor_records(session, row.id)) if tensors else ())


def inserted_info(
    artifact_id: int, values: dict[str, Any], tensors: Iterable[TensorRecord]
) -> ArtifactInfo:
    """The record of an artifact just inserted with :func:`artifact_values`' ``values``
    and these ``tensors``, with no read (no alias, import or file refers to it yet)."""
    return _info(SimpleNamespace(id=artifact_id, **values), tensors=tuple(tensors))


def _info(
    row: Artifact, *, aliases=(), imports=(), files=(), tensors=(), same_content=()
) -> ArtifactInfo:
    return ArtifactInfo(
        id=row.id,
        kind=row.kind,
        name=row.name,
        family=row.family,
        content_hash=row.content_hash,
        config=loads(row.config_json),
        info=loads(row.info_json) or {},
        virtual=row.virtual,
        created_at=aware(row.created_at),
        created_by=row.created_by,
        deleted=row.deleted_at is not None,
        aliases=aliases,
        imports=imports,
        tensors=tensors,
        files=files,
        same_content=same_content,
        tensor_count=row.tensor_count,
        nbytes=row.nbytes,
        layers=row.layers,
        hidden=row.hidden,
    )


def coinciding(session: Session, row: Artifact) -> list[Artifact]:
    """The other kept artifacts with ``row``'s content hash, oldest first.

    Content is identity, and ``(kind, content_hash)`` is unique, so the same content can
    be registered once per kind: a derived checkpoint materialized at its source's own
    size (or imported back) is byte for byte its source, and both records stay, each
    with its own lineage.
    """
    return list(
        session.scalars(
            select(Artifact)
            .where(
                Artifact.content_hash == row.content_hash,
                Artifact.id != row.id,
                Artifact.deleted_at.is_(None),
            )
            .order_by(Artifact.id)
        )
    )


def tensor_records(session: Session, artifact_id: int) -> list[TensorRecord]:
    rows = session.execute(_TENSORS_OF, {"artifact_id": artifact_id}).all()
    return [
        TensorRecord(t.name, t.dtype, tuple(json.loads(t.shape_json)), t.nbytes, t.digest)
        for t in rows
    ]


def file_records(session: Session, artifact_id: int) -> list[FileRecord]:
    rows = session.execute(_FILES_OF, {"artifact_id": artifact_id}).all()
    return [FileRecord(f.name, f.role, f.nbytes, f.digest) for f in rows]


def set_files(session: Session, artifact: Artifact, files: Iterable[FileRecord]) -> None:
    """Make ``files`` the artifact's stored files (their blobs are already stored)."""
    files = sorted(files, key=lambda f: f.name)
    if file_records(session, artifact.id) == files:
        return  # a re-import of the same folder: no write
    session.execute(delete(ArtifactFile).where(ArtifactFile.artifact_id == artifact.id))
    if files:
        session.execute(
            insert(ArtifactFile),
            [
                {
                    "artifact_id": artifact.id,
                    "name": f.name,
                    "role": f.role,
                    "nbytes": f.nbytes,
                    "digest": f.digest,
                }
                for f in files
            ],
        )
    session.flush()


def registry_id(session: Session) -> str:
    return session.scalars(select(RegistryIdentity.id)).one()


_BY_CONTENT = select(Artifact).where(
    Artifact.kind == bindparam("kind", type_=Artifact.kind.type),
    Artifact.content_hash == bindparam("content_hash", type_=Artifact.content_hash.type),
)
_ID_BY_CONTENT = select(Artifact.__table__.c.id).where(
    Artifact.__table__.c.kind == bindparam("kind", type_=Artifact.kind.type),
    Artifact.__table__.c.content_hash
    == bindparam("content_hash", type_=Artifact.content_hash.type),
)
_LIVE = select(Artifact.__table__.c.id).where(
    Artifact.__table__.c.id == bindparam("id", type_=Artifact.id.type),
    Artifact.__table__.c.deleted_at.is_(None),
)
_LIVE_LOCKED = _LIVE.with_for_update()


def is_live(session: Session, artifact_id: int, *, lock: bool = False) -> bool:
    """Whether artifact ``artifact_id`` is registered and not removed, read afresh from
    the database; ``lock``: its row is held until the transaction ends (PostgreSQL; a
    SQLite writer holds the whole database already). One column on the session's
    connection, no ORM object: every derived record asks this of its parent."""
    statement = _LIVE_LOCKED if lock else _LIVE
    found = session.connection().execute(statement, {"id": artifact_id}).first()
    return found is not None


def _live_and_held_statement() -> Select:
    table = Artifact.__table__
    other = table.alias("holder")
    holder = (
        select(other.c.id)
        .where(
            other.c.kind == bindparam("kind", type_=Artifact.kind.type),
            other.c.content_hash == bindparam("content_hash", type_=Artifact.content_hash.type),
        )
        .scalar_subquery()
    )
    return (
        select(table.c.id, holder.label("holder"))
        .where(table.c.id == bindparam("id", type_=Artifact.id.type), table.c.deleted_at.is_(None))
        .with_for_update(of=table)
    )


_LIVE_AND_HELD = _live_and_held_statement()


def live_and_held(
    session: Session, artifact_id: int, kind: str, content_hash: str
) -> tuple[bool, bool]:
    """Whether artifact ``artifact_id`` is live, its row then held until the transaction
    ends (:func:`is_live` with ``lock``), and whether a ``kind`` row, removed or not,
    holds this content: one round trip where a derived record asks both of every write."""
    params = {"id": artifact_id, "kind": kind, "content_hash": content_hash}
    found = session.connection().execute(_LIVE_AND_HELD, params).first()
    if found is None:
        return False, False
    return True, found.holder is not None


def find_by_content(
    session: Session, kind: str, content_hash: str, *, for_write: bool = False
) -> Artifact | None:
    """The ``kind`` row holding this content, removed or not.

    ``for_write``: the caller will point new records at the row it finds, or bring it back
    if removed, so the row is locked and read again first. A `zoo rm` or a `zoo gc`
    forgetting the row (:func:`zoo.api.maintenance.gc`) then either commits before (the
    row is gone: None, and the writer records the content afresh) or waits for the writer.
    On PostgreSQL the two would otherwise interleave: a row brought back without its
    tensors' records, or an import's record updated after gc deleted it. SQLite's write
    lock serializes them already."""
    params = {"kind": kind, "content_hash": content_hash}
    if not for_write:
        return session.scalar(_BY_CONTENT, params)
    # Most writes register new content: one column says so, without loading a row.
    session.flush()
    if session.connection().execute(_ID_BY_CONTENT, params).first() is None:
        return None
    return session.scalar(_BY_CONTENT_LOCKED, params)


_BY_CONTENT_LOCKED = _BY_CONTENT.with_for_update().execution_options(populate_existing=True)


def name_taken(session: Session, name: str) -> bool:
    return (
        session.scalar(select(Artifact.id).where(Artifact.name == name)) is not None
        or session.get(Alias, name) is not None
    )


def free_name(
    session: Session, asked: str | None, default: str, content_hash: str, *, clash: str
) -> str:
    """The name a new artifact gets: ``asked`` (refused with ``clash`` when taken), else
    ``default``, made unique with the content hash's first 8 digits when that is taken."""
    if asked is not None:
        if name_taken(session, asked):
            raise ConflictError(clash, params=["name"])  # the caller's name=
        return asked
    return default if not name_taken(session, default) else f"{default}-{content_hash[:8]}"


def removed_holder_note(session: Session, name: str) -> str:
    """ " ..." explaining that ``name`` is held by a removed artifact, or ""."""
    row = session.scalar(select(Artifact).where(Artifact.name == name))
    if row is None or row.deleted_at is None:
        return ""
    return (
        f" (by the removed {row.kind} {row.content_hash[:12]}: `reg.gc()` frees the name once "
        "nothing kept descends from it)"
    )


def insert_artifact(session: Session, **columns) -> Artifact:
    """Add an artifact row and its tensor rows, with the aggregates a listing shows; takes
    :func:`artifact_values`' arguments.

    The row is inserted by one prepared statement and put into the session as loaded:
    the ORM's flush of a new object costs more than the database takes to insert it,
    and every import, extraction and materialization writes one."""
    row = Artifact(**vars(inserted_artifact(session, **columns)))
    make_transient_to_detached(row)
    session.add(row)
    return row


def inserted_artifact(session: Session, **columns) -> SimpleNamespace:
    """:func:`insert_artifact` without an ORM object: the row's columns as attributes,
    for a caller that reads them (:func:`new_info`) and changes nothing (a derived
    record: the session then has no object to track, expire and flush). Takes
    :func:`artifact_values`' arguments."""
    values, tensors = artifact_values(**columns)
    session.flush()  # what the session holds goes first, as an ORM insert would order it
    connection = session.connection()
    artifact_id = connection.execute(_INSERT_ARTIFACT, values).scalar_one()
    rows = tensor_rows(tensors, artifact_id)
    if rows:
        # One executemany instead of an ORM object per tensor: writers hold the lock less.
        connection.execute(_INSERT_TENSORS, rows)
    return SimpleNamespace(id=artifact_id, **values)


def artifact_values(
    *,
    kind: str,
    name: str,
    family: str | None,
    content_hash: str,
    config: dict[str, Any] | None,
    info: dict[str, Any],
    tensors: Iterable[TensorRecord],
    created_by: str,
    virtual: bool = False,
    layers: int | None = None,
    hidden: int | None = None,
) -> tuple[dict[str, Any], list[TensorRecord]]:
    """A new artifact row's column values, with the aggregates a listing shows and the
    keys an import's copy check looks up; and its tensors' records, as a list."""
    # Here: a page reader needs none of it.
    from zoo.checkpoint.manifest import copy_key, weights_key

    tensors = list(tensors)
    weights = weights_key(tensors) if kind in ("source", "derived") else None
    values = {
        "kind": kind,
        "name": name,
        "family": family,
        "content_hash": content_hash,
        "config_json": None if config is None else dumps(config),
        "info_json": dumps(info),
        "virtual": virtual,
        "created_at": now(),
        "created_by": created_by,
        "deleted_at": None,
        "tensor_count": len(tensors),
        "nbytes": sum(t.nbytes for t in tensors),
        "layers": layers,
        "hidden": hidden,
        "weights_key": weights,
        "copy_key": copy_key(config, weights),
    }
    return values, tensors


def tensor_rows(tensors: Iterable[TensorRecord], artifact_id: int | None = None) -> list[dict]:
    """The tensor rows of an artifact's records (``artifact_id`` included when given)."""
    rows = [
        {
            "name": t.name,
            "dtype": t.dtype,
            "shape_json": shape_json(t.shape),
            "nbytes": t.nbytes,
            "digest": t.digest,
        }
        for t in tensors
    ]
    if artifact_id is not None:
        for row in rows:
            row["artifact_id"] = artifact_id
    return rows


def shape_json(shape) -> str:
    """``json.dumps(list(shape))`` of a shape of ints (what a tensor row stores), written
    out directly: a record writes one per tensor."""
    return "[" + ", ".join(str(operator.index(n)) for n in shape) + "]"


_INSERT_ARTIFACT = insert(Artifact.__table__).returning(Artifact.__table__.c.id)
_INSERT_TENSORS = insert(ArtifactTensor.__table__)


def add_import(
    session: Session,
    artifact: Artifact,
    *,
    origin: str,
    revision: str,
    files: dict[str, str],
    by: str,
    from_main: bool = True,
) -> None:
    existing = session.scalar(
        select(ImportRecord).where(
            ImportRecord.artifact_id == artifact.id,
            ImportRecord.origin == origin,
            ImportRecord.revision == revision,
        )
    )
    if existing is not None:
        # Imported again: the record says when and by whom last, and whether it was ever
        # asked for as the default branch, which is what a Hub repository id follows.
        existing.imported_at, existing.imported_by = now(), by
        existing.files_json = dumps(files)  # what the folder held this time
        existing.from_main = existing.from_main or from_main
        session.flush()
    else:
        session.add(
            ImportRecord(
                artifact_id=artifact.id,
                origin=origin,
                revision=revision,
                files_json=dumps(files),
                imported_at=now(),
                imported_by=by,
                from_main=from_main,
            )
        )
        session.flush()


def also_named(session: Session, row: Artifact, name: str, *, what: str, by: str) -> None:
    """``row`` answers to ``name`` too, as an alias: an import or extraction of content
    already registered, asked for under another name. A name another artifact holds is
    refused."""
    if name == row.name:
        return
    owner = alias_target(session, name)
    if owner is None and not name_taken(session, name):
        add_alias(session, name, row, by)
    elif owner is None or owner.id != row.id:
        raise ConflictError(
            f"{name!r} already names another artifact; this {what} is registered as {row.name!r}."
        )


def add_alias(session: Session, alias: str, artifact: Artifact, by: str) -> None:
    at = now()
    session.add(Alias(name=alias, artifact_id=artifact.id, created_at=at))
    session.flush()
    record_alias_setting(session, alias, artifact, at, by)


def record_alias_setting(
    session: Session, alias: str, artifact: Artifact, at: datetime, by: str
) -> str | None:
    """Keep in the alias's history that it points at ``artifact`` from ``at``; returns the
    artifact name the setting before it names (None for a new alias, or one that went with
    the artifact it named), read by the same statement."""
    values = _alias_setting(alias, artifact, at, by)
    return session.connection().execute(_INSERT_ALIAS_SETTING_BEFORE, values).scalar_one()


def record_alias_removals(session: Session, aliases: Iterable[str], by: str) -> None:
    """Keep in each alias's history that it went with the artifact it named."""
    at = now()
    rows = [_alias_setting(alias, None, at, by) for alias in aliases]
    if rows:
        session.connection().execute(_INSERT_ALIAS_SETTING, rows)


def _alias_setting(alias: str, artifact: Artifact | None, at: datetime, by: str) -> dict:
    """A row of ``alias_history``: no artifact when the alias went with the one it named."""
    return {
        "alias": alias,
        "artifact_name": artifact.name if artifact else None,
        "kind": artifact.kind if artifact else None,
        "content_hash": artifact.content_hash if artifact else None,
        "set_at": at,
        "set_by": by,
    }


_INSERT_ALIAS_SETTING = insert(AliasHistory.__table__)


def _insert_alias_setting_before():
    table = AliasHistory.__table__
    earlier = table.alias("earlier")
    # The row inserted, named in full: RETURNING writes the table's columns bare, which
    # inside the subquery would be the earlier row's. SQLite's subquery sees the new row,
    # PostgreSQL's does not: the id says which rows came before in both.
    alias, row_id = (literal_column(f"{table.name}.{c}") for c in ("alias", "id"))
    before = (
        select(earlier.c.artifact_name)
        .where(earlier.c.alias == alias, earlier.c.id < row_id)
        .order_by(earlier.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return insert(table).returning(before)


# The history of an alias moved thousands of times (a `prod` that CI moves) is not read
# to learn the one setting before.
_INSERT_ALIAS_SETTING_BEFORE = _insert_alias_setting_before()


def alias_history(
    session: Session, alias: str, *, limit: int | None = None, after: int | None = None
) -> AliasHistoryPage:
    """The settings of ``alias``, newest first: ``limit`` of them (None: every one) set
    before the setting of id ``after`` (None: from the newest). Read by the index on
    (alias, id), so a page costs its own rows, however long the history."""
    query = select(AliasHistory).where(AliasHistory.alias == alias)
    if after is not None:  # a cursor past 32 bits is compared, not refused by PostgreSQL
        query = query.where(AliasHistory.id < literal(after, BigInteger))
    query = query.order_by(AliasHistory.id.desc())
    if limit is not None:
        query = query.limit(limit + 1)  # one more says whether a next page is there
    rows = list(session.scalars(query))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if more else rows
    settings = [
        AliasSetting(
            r.alias,
            r.artifact_name,
            r.kind,
            r.content_hash,
            aware(r.set_at) if r.set_at is not None else None,
            r.set_by,
        )
        for r in rows
    ]
    return AliasHistoryPage(settings, str(rows[-1].id) if more else None)


def insert_or(dialect: str):
    """The ``insert`` of ``dialect`` (PostgreSQL's, else SQLite's): the one that takes
    ``ON CONFLICT`` clauses, with which a write decides in one statement."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def point_alias(
    session: Session, alias: str, artifact: Artifact, by: str
) -> tuple[bool, str | None]:
    """Point ``alias`` at the artifact, adding it or moving it, unless it is a registry
    name: one statement, and one more that keeps the setting in the alias's history.
    Returns whether anything was written (not for a registry name, nor for an alias that
    points there already) and, when it was, the artifact name the alias's setting before
    this one names (:func:`record_alias_setting`)."""
    statement = _point_alias_statement(session.get_bind().dialect.name)
    values = {"alias": alias, "target": artifact.id, "created_at": now()}
    if session.execute(statement, values).first() is None:
        return False, None
    # Timed, and the setting before read, once the alias row is this writer's: settings
    # of one alias in commit order.
    return True, record_alias_setting(session, alias, artifact, now(), by)


@functools.lru_cache(maxsize=4)
def _point_alias_statement(dialect: str):
    alias = bindparam("alias", type_=Alias.name.type)
    free = ~select(Artifact.id).where(Artifact.name == alias).exists()
    row = select(
        alias,
        bindparam("target", type_=Alias.artifact_id.type),
        bindparam("created_at", type_=Alias.created_at.type),
    ).where(free)
    # The table, not the entity: the ORM would read the parameters as an alias's columns.
    statement = insert_or(dialect)(Alias.__table__).from_select(
        ["name", "artifact_id", "created_at"], row
    )
    return statement.on_conflict_do_update(
        index_elements=["name"],
        set_={"artifact_id": statement.excluded.artifact_id},
        where=Alias.__table__.c.artifact_id != statement.excluded.artifact_id,
    ).returning(Alias.__table__.c.name)


def _named_id(query):
    """A scalar subquery: the id of the artifact ``query`` (a bound parameter) names as an
    alias, else as a registry name, deleted or not; NULL when it names none."""
    by_alias = (
        select(Artifact.id, literal_column("0").label("rank"))
        .join(Alias, Alias.artifact_id == Artifact.id)
        .where(Alias.name == query)
    )
    by_name = select(Artifact.id, literal_column("1").label("rank")).where(Artifact.name == query)
    found = union_all(by_alias, by_name).subquery()
    return select(found.c.id).order_by(found.c.rank).limit(1).scalar_subquery()


def live_named_id(query):
    """A scalar subquery: the id of the live artifact ``query`` (a bound parameter) names
    as :func:`resolve` reads an alias or a registry name; NULL where :func:`resolve` would
    try a hash prefix or refuse."""
    named = _named_id(query)
    return (
        select(Artifact.id)
        .where(Artifact.id == named, Artifact.deleted_at.is_(None))
        .scalar_subquery()
    )


def _by_alias_or_name_statement() -> Select:
    query = bindparam("query", type_=Alias.name.type)
    return select(Artifact).where(Artifact.id == _named_id(query))


# Built once: every command resolves names, and building this statement takes longer than
# SQLite takes to run it.
_BY_ALIAS_OR_NAME = _by_alias_or_name_statement()


def by_alias_or_name(session: Session, query: str) -> Artifact | None:
    """The artifact ``query`` names as an alias, else as a registry name: one round trip."""
    return session.scalar(_BY_ALIAS_OR_NAME, {"query": query})


def alias_target(session: Session, alias: str) -> Artifact | None:
    row = session.get(Alias, alias)
    return None if row is None else session.get(Artifact, row.artifact_id)


def add_edge(
    session: Session,
    *,
    parent_id: int,
    child_id: int,
    relation: str,
    recipe: dict[str, Any],
    zoo_version: str,
    by: str,
):
    """The edge ``parent --relation--> child`` (its columns), added unless it is there
    already: one INSERT that does nothing on the unique key, and a read only when it did
    nothing."""
    values = edge_values(parent_id, child_id, relation, recipe, zoo_version, by)
    session.flush()  # the rows it refers to may be pending
    connection = session.connection()
    added = connection.execute(_insert_edge_statement(connection.dialect.name), values)
    return added.one_or_none() or existing_edge(session, values)


def edge_values(parent_id, child_id, relation, recipe, zoo_version, by) -> dict[str, Any]:
    """An edge's column values, as the edge inserts take them."""
    return {
        "parent_id": parent_id,
        "child_id": child_id,
        "relation": relation,
        "recipe_json": dumps(recipe),
        "zoo_version": zoo_version,
        "created_at": now(),
        "created_by": by,
    }


def existing_edge(session: Session, values: dict[str, Any]):
    """The columns of the edge with ``values``' parent, child and relation, or None."""
    key = {k: values[k] for k in ("parent_id", "child_id", "relation")}
    return session.execute(_EDGE, key).one_or_none()


@functools.lru_cache(maxsize=4)
def _insert_edge_statement(dialect: str):
    # The table, not the entity: run on the connection, as Core, without the ORM's bulk
    # insert machinery.
    return (
        insert_or(dialect)(Edge.__table__)
        .on_conflict_do_nothing(index_elements=["parent_id", "child_id", "relation"])
        .returning(*EDGE_COLUMNS)
    )


def edge_info(e) -> EdgeInfo:
    """An edge's record, from its ORM row or a row of its columns."""
    return EdgeInfo(
        e.id,
        e.parent_id,
        e.child_id,
        e.relation,
        json.loads(e.recipe_json),
        e.zoo_version,
        aware(e.created_at),
        e.created_by,
    )


def edges(
    session: Session, *, parent_id: int | None = None, child_id: int | None = None
) -> list[EdgeInfo]:
    query = select(Edge).order_by(Edge.id)
    if parent_id is not None:
        query = query.where(Edge.parent_id == parent_id)
    if child_id is not None:
        query = query.where(Edge.child_id == child_id)
    return [edge_info(e) for e in session.scalars(query)]


def list_artifacts(
    session: Session,
    *,
    kind: str | None = None,
    family: str | None = None,
    include_deleted: bool = False,
    limit: int | None = None,
) -> list[Artifact]:
    """The artifacts of ``kind`` and ``family``, oldest first; the first ``limit`` only."""
    return list(session.scalars(_artifacts_of(kind, family, include_deleted).limit(limit)))


def count_artifacts(session: Session, *, kind: str | None = None, family: str | None = None) -> int:
    """How many kept artifacts of ``kind`` and ``family`` there are."""
    query = _artifacts_of(kind, family, include_deleted=False).order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(query))


def _artifacts_of(kind: str | None, family: str | None, include_deleted: bool) -> Select:
    query = select(Artifact).order_by(Artifact.id)
    if kind:
        query = query.where(Artifact.kind == kind)
    if family:
        query = query.where(Artifact.family == family)
    if not include_deleted:
        query = query.where(Artifact.deleted_at.is_(None))
    return query


def set_family_default(session: Session, family: str, artifact: Artifact) -> None:
    row = session.get(FamilyDefault, family)
    if row is None:
        session.add(FamilyDefault(family=family, artifact_id=artifact.id))
    else:
        row.artifact_id = artifact.id
    session.flush()


def family_default(session: Session, family: str) -> Artifact | None:
    row = session.get(FamilyDefault, family)
    return None if row is None else session.get(Artifact, row.artifact_id)


def hub_repo_id(query: str) -> str | None:
    """The Hugging Face Hub repository id ``query`` names (``ORG/NAME``, or ``hf://`` and an
    id), else None. No registry name or alias can hold ``/`` or ``:``, so the two never
    meet."""
    repo = query[len("hf://") :] if query.startswith("hf://") else query
    return repo if "/" in query and is_repo_id(repo) else None


def placeholder_hash(repo_id: str) -> str:
    """A placeholder's stand-in content hash: one per Hub repository id."""
    return hashlib.sha256(f"hf://{repo_id}".encode()).hexdigest()


# The newest import from an origin whose artifact is kept: built once, as every name is.
_LAST_IMPORTED_FROM = (
    select(Artifact)
    .join(ImportRecord, ImportRecord.artifact_id == Artifact.id)
    .where(
        ImportRecord.origin == bindparam("origin", type_=ImportRecord.origin.type),
        Artifact.deleted_at.is_(None),
        Artifact.kind != "placeholder",
    )
    .order_by(
        ImportRecord.from_main.desc(), ImportRecord.imported_at.desc(), ImportRecord.id.desc()
    )
    .limit(1)
)


def hub_import(session: Session, repo_id: str) -> Artifact | None:
    """The kept artifact imported last from the Hub repository ``repo_id``'s default
    branch (a re-import included: what ``main`` was when last asked for), else from a
    pinned revision (``--revision``) imported last; None if none is kept. A pin never
    takes the id over from the default branch."""
    return session.scalar(_LAST_IMPORTED_FROM, {"origin": f"hf://{repo_id}"})


def resolve(
    session: Session,
    query: str,
    *,
    kinds: Iterable[str] | None = None,
    include_removed: bool = False,
) -> Artifact:
    """Find the artifact a user means by ``query``.

    Tried in order: a Hub repository id (``ORG/NAME`` or ``hf://ID``: the artifact
    imported last from it, else the placeholder a model card's ``base_model`` made for
    it), an alias, a registry name, a content-hash prefix (8+ hex digits, either case;
    a kept artifact's first, else a removed one's).

    Raises:
        NotFoundError: nothing matches (with near-match suggestions), or what matches was
            removed with ``zoo rm`` (unless ``include_removed``: it is returned).
        AmbiguousNameError: a hash prefix matches several artifacts.
    """
    check_lookup(query)
    kinds = tuple(kinds) if kinds else KINDS
    repo = hub_repo_id(query)
    row = None
    if repo is not None:
        row = hub_import(session, repo) or find_by_content(
            session, "placeholder", placeholder_hash(repo)
        )
    if row is None:
        row = by_alias_or_name(session, query)
    prefix = query.lower()
    if row is None and len(query) >= 8 and all(c in "0123456789abcdef" for c in prefix):
        found = session.scalars(
            select(Artifact).where(Artifact.content_hash.startswith(prefix)).order_by(Artifact.id)
        ).all()
        matches = [m for m in found if m.deleted_at is None] or found
        # The kinds the command takes first (rederive of a hash a source shares with the
        # same-size derived checkpoint means the derived one).
        matches = [m for m in matches if m.kind in kinds] or matches
        if len({m.content_hash for m in matches}) == 1:
            # One content under several kinds (a same-size materialize equals its source):
            # the first registration, where that content entered the registry.
            matches = matches[:1]
        if len(matches) > 1:
            raise AmbiguousNameError(
                f"Hash prefix {query!r} matches {len(matches)} artifacts "
                f"({', '.join(m.name for m in matches)}); give more digits.",
                candidates=[m.name for m in matches],
            )
        row = matches[0] if matches else None
    nouns = {"derived": "derived checkpoint"}
    what = " or ".join(nouns.get(k, k) for k in kinds) if len(kinds) < len(KINDS) else "artifact"
    kept = row is not None and (row.deleted_at is None or include_removed)
    if kept and row.kind not in kinds:
        raise InvalidInputError(f"{query!r} is a {row.kind}; this command needs a {what}.")
    if row is not None and not kept:
        raise NotFoundError(
            f"{query!r} names the {row.kind} {row.name} ({row.content_hash[:12]}), removed with "
            "`zoo rm`; registering it again (import, extract or materialize) brings it back "
            "until `zoo gc` forgets it, and `zoo show --all` or `zoo lineage --all` shows it.",
            query=query,
        )
    if row is None:
        raise not_found(session, query, what=what)
    return row


# Names on each side of a mistyped one, in the name index's order, that "did you mean"
# compares it with: a library of 100,000 artifacts is answered in milliseconds (comparing
# every name took seconds), at the cost of a typo in a name's first letters being found in
# small libraries only.
NEAR_NAMES = 1000


def close_names(session: Session, query: str, *, n: int = 3) -> list[str]:
    """Up to ``n`` registered names and aliases like ``query``, closest first, compared
    case-folded (``BERT`` finds ``bert``; case twins both come back)."""
    names: set[str] = set()
    for column, where in ((Artifact.name, [Artifact.deleted_at.is_(None)]), (Alias.name, [])):
        for probe in {query, query.lower()}:
            names.update(
                session.scalars(
                    select(column).where(*where, column >= probe).order_by(column).limit(NEAR_NAMES)
                )
            )
            names.update(
                session.scalars(
                    select(column)
                    .where(*where, column < probe)
                    .order_by(column.desc())
                    .limit(NEAR_NAMES)
                )
            )
        twins = select(column).where(*where, func.lower(column) == query.lower())
        names.update(session.scalars(twins))
    names.discard(query)
    folded: dict[str, list[str]] = {}
    for name in sorted(names):
        folded.setdefault(name.lower(), []).append(name)
    close = difflib.get_close_matches(query.lower(), folded, n=n, cutoff=0.5)
    return [name for f in close for name in folded[f]][:n]


def dangling_rows(session: Session) -> list[str]:
    """Rows naming a row the database does not hold, as ``N rows of TABLE name a row of
    PARENT that is not there``. zoo's connections enforce the schema's foreign keys, and
    PostgreSQL always does; SQLite's own shell does not, so an artifact deleted there by
    hand leaves its tensors, files, imports and edges behind."""
    if session.get_bind().dialect.name != "sqlite":
        return []
    counts: dict[tuple[str, str], int] = {}
    for table, _rowid, parent, _fk in session.execute(text("PRAGMA foreign_key_check")):
        counts[(table, parent)] = counts.get((table, parent), 0) + 1
    return [
        f"{n} row{'s' if n > 1 else ''} of {table} name{'' if n > 1 else 's'} a row of "
        f"{parent} that is not there"
        for (table, parent), n in sorted(counts.items())
    ]


def not_found(session: Session, query: str, *, what: str = "artifact") -> NotFoundError:
    close = close_names(session, query)
    repo = hub_repo_id(query)
    if repo is not None:
        hint = (
            " A Hub repository id names what was imported from it: "
            f"`reg.import_checkpoint({repo!r})`."
        )
        hint += f" Did you mean {', '.join(close)}?" if close else ""
    elif close:
        hint = f" Did you mean {', '.join(close)}?"
    elif len(query) < 8 and query and all(c in "0123456789abcdef" for c in query):
        hint = f" If {query!r} is a content-hash prefix, give at least 8 hex digits."
    else:
        hint = " Run `reg.list()` to see what is registered."
    return NotFoundError(f"No {what} named {query!r}.{hint}", query=query, suggestions=close)


def artifacts_with_digests(
    session: Session, digests: Iterable[str], *, limit: int | None = None
) -> dict[int, int]:
    """For a set of tensor digests: artifact id -> how many of them it holds. ``limit``:
    only that many, those holding the most first, then the oldest, counted among the
    first ``limit`` holders of each digest the digest index gives: a digest thousands of
    artifacts share (a frozen embedding, one base's weights under many configs) costs
    ``limit`` rows, not one per holder."""
    digests = sorted(set(digests))
    counts: dict[int, int] = {}
    if limit is None:
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            for artifact_id, held in session.execute(
                select(ArtifactTensor.artifact_id, func.count(ArtifactTensor.digest))
                .where(ArtifactTensor.digest.in_(chunk))
                .group_by(ArtifactTensor.artifact_id)
            ):
                counts[artifact_id] = counts.get(artifact_id, 0) + held
        return counts
    for start in range(0, len(digests), 100):
        oldest = [
            # In the index's order (no sort, which would read every holder first).
            select(ArtifactTensor.artifact_id)
            .where(ArtifactTensor.digest == digest)
            .limit(limit)
            .subquery()
            .select()
            for digest in digests[start : start + 100]
        ]
        for (artifact_id,) in session.execute(union_all(*oldest)):
            counts[artifact_id] = counts.get(artifact_id, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


def artifact_with_copy_key(session: Session, key: str | None) -> int | None:
    """The oldest source or derived checkpoint, removed or not, with this copy key
    (:func:`zoo.checkpoint.manifest.copy_key`): one indexed look-up."""
    if key is None:
        return None
    query = select(Artifact.id).where(Artifact.copy_key == key).order_by(Artifact.id).limit(1)
    return session.scalar(query)


def backbone_parent(session: Session, children: list[int]) -> int | None:
    """The oldest artifact with a ``backbone`` edge to one of ``children`` (a task model
    whose base model they are), or None."""
    if not children:
        return None
    query = (
        select(Edge.parent_id)
        .where(Edge.child_id.in_(children), Edge.relation == "backbone")
        .order_by(Edge.parent_id)
        .limit(1)
    )
    return session.scalar(query)


def artifacts_with_weights(session: Session, key: str, *, limit: int) -> list[tuple[int, str]]:
    """(id, config JSON) of the first ``limit`` sources and derived checkpoints, removed or
    not, oldest first, whose weights have this key
    (:func:`zoo.checkpoint.manifest.weights_key`): one indexed look-up."""
    query = (
        select(Artifact.id, Artifact.config_json)
        .where(Artifact.weights_key == key)
        .order_by(Artifact.id)
        .limit(limit)
    )
    return [tuple(r) for r in session.execute(query)]


def artifacts_recording(
    session: Session, name: str, shape, dtype: str, family: str | None
) -> list[tuple[int, str, bool]]:
    """(artifact id, digest, virtual) of each artifact that records a tensor ``name`` of
    this shape and dtype, of ``family`` when one is given (then the family's index finds
    the rows, each tensor by its key): where a file that rounded the tensor may come from."""
    query = (
        select(ArtifactTensor.artifact_id, ArtifactTensor.digest, Artifact.virtual)
        .join(Artifact, Artifact.id == ArtifactTensor.artifact_id)
        .where(
            ArtifactTensor.name == name,
            ArtifactTensor.shape_json == json.dumps(list(shape)),
            ArtifactTensor.dtype == dtype,
        )
    )
    if family is not None:
        query = query.where(Artifact.family == family)
    return [tuple(r) for r in session.execute(query.order_by(ArtifactTensor.artifact_id))]


# --- the output journal ----------------------------------------------------------------------


def add_output(session: Session, path: str, host: str, pid: int) -> int:
    """Note that ``pid`` on ``host`` is writing an output folder at ``path``."""
    from zoo.db.models import OutputRecord

    row = OutputRecord(path=path, host=host, pid=pid, started_at=now())
    session.add(row)
    session.flush()
    return row.id


def remove_output(session: Session, output_id: int) -> None:
    from zoo.db.models import OutputRecord

    row = session.get(OutputRecord, output_id)
    if row is not None:
        session.delete(row)


def outputs_on(session: Session, host: str) -> list[tuple[int, str, int, datetime]]:
    """(id, path, pid, started) of the outputs the journal lists as being written on
    ``host``: running, or left by a writer that was killed."""
    from zoo.db.models import OutputRecord

    rows = session.scalars(select(OutputRecord).where(OutputRecord.host == host))
    return [(r.id, r.path, r.pid, aware(r.started_at)) for r in rows]
