"""Plain, immutable records that leave the data layer instead of ORM rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from zoo.errors import InvalidInputError

#: What an artifact is: a checkpoint imported, a learngene extracted, a checkpoint
#: derived, or a placeholder (a Hub model named in a model card but not imported).
KINDS = ("source", "learngene", "derived", "placeholder")

#: How a listing of every kind finds its total: the four rows of the totals table by their
#: key, never by a scan. On PostgreSQL each write to ``artifacts`` leaves a row version
#: there whose page VACUUM frees but keeps, so a scan reads more pages the more was ever
#: written; the key finds the four rows whatever the write history.
EVERY_KIND_TOTAL = "t.kind IN ({})".format(", ".join(f"'{kind}'" for kind in KINDS))


@dataclass(frozen=True)
class TensorRecord:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: str


@dataclass(frozen=True)
class FileRecord:
    """A file stored with a checkpoint besides its weights (see zoo.checkpoint.side_files)."""

    name: str
    role: str
    nbytes: int
    digest: str


@dataclass(frozen=True)
class ImportInfo:
    origin: str
    revision: str
    files: dict[str, str]
    imported_at: datetime
    imported_by: str


@dataclass(frozen=True)
class ArtifactInfo:
    """A registered artifact: a source checkpoint, a learngene, a derived checkpoint, or a
    placeholder for a Hub model that a model card names as its base but zoo has not
    imported. ``family`` is None when no family resizes it (it is catalogued all the
    same) and for placeholders; ``files`` are the files stored with its weights."""

    id: int
    kind: str
    name: str
    family: str | None
    content_hash: str
    config: dict[str, Any] | None
    info: dict[str, Any]
    virtual: bool
    created_at: datetime
    created_by: str
    deleted: bool = False
    aliases: tuple[str, ...] = ()
    imports: tuple[ImportInfo, ...] = ()
    tensors: tuple[TensorRecord, ...] = field(default=(), repr=False)
    files: tuple[FileRecord, ...] = ()
    #: (kind, name) of the other kept artifacts with this very content, e.g. a derived
    #: checkpoint materialized at its source's own size; filled in by show and audit.
    same_content: tuple[tuple[str, str], ...] = ()
    #: The stored files an import replaced (filled in by import): each role a folder
    #: brings (its tokenizer, the code its ``auto_map`` names...) replaces the role's files
    #: stored before, and what zoo writes from the artifact carries the new ones.
    replaced_files: tuple[FileRecord, ...] = ()
    # Aggregates stored on the row when it was written (equal to what ``tensors`` says,
    # and known without loading them).
    tensor_count: int = 0
    nbytes: int = 0
    layers: int | None = None
    hidden: int | None = None

    def to_json(self, *, with_tensors: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO strings)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["imports"] = [
            {**asdict(i), "imported_at": i.imported_at.isoformat()} for i in self.imports
        ]
        if with_tensors:
            data["tensors"] = [asdict(t) | {"shape": list(t.shape)} for t in self.tensors]
        else:
            del data["tensors"]
        data["aliases"] = list(self.aliases)
        data["files"] = [asdict(f) for f in self.files]
        data["replaced_files"] = [asdict(f) for f in self.replaced_files]
        data["same_content"] = [{"kind": k, "name": n} for k, n in self.same_content]
        return data


@dataclass(frozen=True)
class ArtifactSummary:
    """An artifact as a listing shows it: its row's columns and aliases, never its
    config, recipe or tensor rows (``zoo show`` reads those)."""

    id: int
    kind: str
    name: str
    family: str | None  # None: a catalogued model no family resizes
    content_hash: str
    virtual: bool
    created_at: datetime
    created_by: str
    deleted: bool
    tensor_count: int
    nbytes: int
    layers: int | None
    hidden: int | None
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "created_at": self.created_at.isoformat(),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class Page:
    """One page of a listing, newest first unless asked otherwise.

    ``total`` counts every match of the filters (not only this page); ``next`` is the
    cursor that continues after the last item, or None on the last page.
    """

    items: tuple[ArtifactSummary, ...]
    total: int
    next: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "artifacts": [i.to_json() for i in self.items],
            "total": self.total,
            "next": self.next,
        }


def summary_from_row(row) -> ArtifactSummary:
    """An artifact as a page reader without SQLAlchemy reads it (:mod:`zoo.db.sqlite_page`,
    :mod:`zoo.db.pg_page`): id, kind, name, family, content hash, virtual, created at (UTC
    wall time as ISO text, as zoo writes it), created by, removed, tensor count, bytes,
    layers, hidden, then the aliases as a list."""
    (id_, kind, name, family, content_hash, virtual, created_at, created_by, deleted) = row[:9]
    tensor_count, nbytes, layers, hidden, aliases = row[9:14]
    return ArtifactSummary(
        id=id_,
        kind=kind,
        name=name,
        family=family,
        content_hash=content_hash,
        virtual=bool(virtual),
        created_at=datetime.fromisoformat(created_at).replace(tzinfo=timezone.utc),
        created_by=created_by,
        deleted=bool(deleted),
        tensor_count=tensor_count,
        nbytes=nbytes,
        layers=layers,
        hidden=hidden,
        aliases=tuple(sorted(aliases)),
    )


def check_name_text(name, what: str = "name") -> None:
    """Refuse a name to look up that no database can hold: one that is not text, or not
    UTF-8 text (a lone surrogate, which every driver refuses to encode). Checked by the
    registry before any statement and by a client before any request."""
    if not isinstance(name, str):
        raise InvalidInputError(f"The {what} is text, not {type(name).__name__} ({name!r:.40}).")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"The {what} {name!a} is not UTF-8 text.") from None


#: The longest text a look-up asks a database about: no name, alias (128 characters),
#: content hash (64) or Hub repository id is near it.
MAX_LOOKUP = 1024


def check_lookup(query, what: str = "name") -> None:
    """Refuse, before any statement, a looked-up name no database can hold: one that is not
    UTF-8 text is bad input (:func:`check_name_text`); one with NUL (PostgreSQL refuses it
    in text, SQLite finds nothing), or longer than any name (a pasted file, not a name),
    names nothing. Checked by the registry, by a server before it asks the registry and by
    a client before any request, so all three answer in the same words."""
    from zoo.errors import NotFoundError

    check_name_text(query, what)
    if "\x00" in query:
        raise NotFoundError(f"Nothing is named {query!r} (a name holds no NUL).", query=query)
    if len(query) > MAX_LOOKUP:
        raise NotFoundError(
            f"Nothing is named {query[:40]!r}... ({len(query):,} characters; a name has at "
            f"most {MAX_LOOKUP:,}).",
            query=query,
        )


def check_search(
    *,
    kind,
    family,
    name,
    bounds: dict[str, Any],
    derived_from,
    created_by,
    created_after,
    created_before,
    limit,
    after,
) -> tuple[int | None, datetime | None, datetime | None]:
    """Refuse a listing's filters that are not what :meth:`zoo.Registry.search` takes,
    before any query: checked by the registry and by a client before any request, so
    both refuse the same filters in the same words. Returns the limit (None: every
    match) and the two moments as datetimes."""
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"A page holds at least 1 artifact (got limit={limit!r}).")
    if limit is not None and limit >= 1 << 62:  # more than a database holds: every one (and
        limit = None  # the page asks for limit + 1 rows, which must stay a 64-bit integer)
    for what, bound in bounds.items():
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise InvalidInputError(f"{what} is a whole number, not {bound!r}.")
        if not 0 <= bound < 2**63:  # no size is negative; a database's integer ends there
            raise InvalidInputError(f"{what} must be from 0 to 2^63-1, got {bound}.")
    for what, text in (
        ("family", family),
        ("author", created_by),
        ("name pattern", name),
        ("cursor", after),
        ("derived_from", derived_from),
    ):
        if text is None:
            continue
        check_name_text(text, what)  # UTF-8 text, as every database takes it
        if "\x00" in text:  # no name holds it; PostgreSQL refuses it
            raise InvalidInputError(f"The {what} cannot hold a NUL character.")
    return (
        limit,
        _moment(created_after, "created_after"),
        _moment(created_before, "created_before"),
    )


def _moment(value: datetime | str | None, what: str) -> datetime | None:
    """A datetime from an ISO 8601 date or time (UTC unless it names its offset), or from
    a date (its midnight, UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{what} is a datetime, a date or ISO 8601 text, not a {type(value).__name__}."
        )
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"{what} {value!r} is not an ISO 8601 date or time (e.g. 2026-12-01 or "
            "2026-12-01T14:30:00+01:00)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_cursor(cursor: str | None) -> int | None:
    """The last id of the page before, which a listing cursor (``Page.next``) names; None
    for a first page. Checked by both readers of a page (SQLAlchemy's and sqlite3's)."""
    if cursor is None or cursor == "":
        return None
    # "²" is a digit to str.isdigit; ids are 64-bit integers in both databases.
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) >= 1 << 63:
        raise InvalidInputError(
            f"{cursor!r} is not a listing cursor; pass the `next` value a previous page gave."
        )
    return int(cursor)


@dataclass(frozen=True)
class EdgeInfo:
    """A derivation: ``parent`` --relation--> ``child`` with its recipe."""

    id: int
    parent_id: int
    child_id: int
    relation: str
    recipe: dict[str, Any]
    zoo_version: str
    created_at: datetime
    created_by: str
    #: The two artifacts' registry names, where the caller resolved names to make it (a
    #: link declared by alias or hash prefix says which artifacts it joined).
    parent_name: str | None = None
    child_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "created_at": self.created_at.isoformat()}
        for end in ("parent_name", "child_name"):
            if data[end] is None:
                del data[end]
        return data


@dataclass(frozen=True)
class AliasSetting:
    """An alias pointed at ``artifact_name`` from ``set_at`` until the next setting (or
    now); ``set_at`` and ``set_by`` are None for a setting made before zoo kept this
    history. ``artifact_name``, ``kind`` and ``content_hash`` are None where the alias
    went with the artifact it named, forgotten by ``zoo gc``."""

    alias: str
    artifact_name: str | None
    kind: str | None
    content_hash: str | None
    set_at: datetime | None
    set_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "set_at": self.set_at.isoformat() if self.set_at else None}


class AliasHistoryPage(list):
    """One page of an alias's settings (:class:`AliasSetting`), newest first: a list, as
    the whole history was before it came in pages. ``next`` is the cursor that continues
    after the last setting, or None on the last page."""

    def __init__(self, settings=(), next: str | None = None):
        super().__init__(settings)
        self.next = next

    def to_json(self, alias: str) -> dict[str, Any]:
        return {"alias": alias, "history": [s.to_json() for s in self], "next": self.next}


def check_history_page(limit, after) -> tuple[int | None, int | None]:
    """Refuse a page of an alias's history that :meth:`zoo.Registry.alias_history` does not
    take, before any query: checked by the registry and by a client before any request,
    in the same words. Returns the limit (None: every setting) and the id the cursor
    names (None: the newest first)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"A page holds at least 1 setting (got limit={limit!r}).")
    if limit is not None and limit >= 1 << 62:  # more than a database holds: every one
        limit = None
    if after is not None:
        check_name_text(after, "cursor")
    return limit, parse_cursor(after)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
