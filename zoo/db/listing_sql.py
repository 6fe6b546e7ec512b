"""The conditions of a listing written as SQL text, for the page readers that run without
SQLAlchemy (:mod:`zoo.db.sqlite_page`, :mod:`zoo.db.pg_page`).

They are :func:`zoo.db.search.conditions` for the filters `zoo ls` takes most (kind,
family, a name or alias pattern, layers and hidden ranges, author), the same statement
on both back ends; tests check that the pages are the registry's. The filters that need
a name resolved or a time parsed (``derived_from``, ``created_after``,
``created_before``) are left to the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The filters the readers answer besides ``kind`` and ``include_deleted``.
QUICK_FILTERS = (
    "family",
    "name",
    "min_layers",
    "max_layers",
    "min_hidden",
    "max_hidden",
    "created_by",
)
_TEXT = ("family", "name", "created_by")
_INT64 = range(-(2**63), 2**63)


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


def answerable(filters: dict[str, Any]) -> bool:
    """Whether ``filters`` (:data:`QUICK_FILTERS` only) are values the readers pass on as
    the registry would: text without NUL (libpq reads C strings), integers a 64-bit
    column compares. Anything else is the registry's to refuse or answer."""
    for key, value in filters.items():
        if key not in QUICK_FILTERS:
            return False
        if value is None:
            continue
        if key in _TEXT:
            if type(value) is not str or "\x00" in value:
                return False
        elif type(value) is not int or value not in _INT64:
            return False
    return True


def conditions(
    arg: Callable[[object], str], *, kind: str | None, include_deleted: bool, **filters
) -> list[str]:
    """The WHERE conditions over ``artifacts a`` that keep what ``filters`` keep (names as
    in :data:`QUICK_FILTERS`; None keeps everything). ``arg(value)`` binds a value and
    returns its placeholder, called in the order the placeholders appear."""
    found = []
    if kind is not None:
        found.append(f"a.kind = {arg(kind)}")
    if filters.get("family"):  # as the registry reads them, an empty text keeps everything
        found.append(f"a.family = {arg(filters['family'])}")
    if not include_deleted:
        found.append("a.deleted_at IS NULL")
    if filters.get("name"):
        pattern = like_pattern(filters["name"])
        found.append(
            f"(lower(a.name) LIKE {arg(pattern)} ESCAPE '\\' OR EXISTS (SELECT 1 FROM aliases "
            f"al WHERE al.artifact_id = a.id AND lower(al.name) LIKE {arg(pattern)} "
            "ESCAPE '\\'))"
        )
    for column in ("layers", "hidden"):
        # As wide as the registry's bound integers: PostgreSQL would read a text parameter
        # compared with an integer column as an integer, and refuse one past 2**31.
        low, high = filters.get(f"min_{column}"), filters.get(f"max_{column}")
        if low is not None:
            found.append(f"a.{column} >= CAST({arg(low)} AS BIGINT)")
        if high is not None:
            found.append(f"a.{column} <= CAST({arg(high)} AS BIGINT)")
    if filters.get("created_by"):
        found.append(f"a.created_by = {arg(filters['created_by'])}")
    return found


def counted(filters: dict[str, Any]) -> bool:
    """Whether a listing with ``filters`` counts its matches (a filter is set), rather than
    reading the totals the database keeps (a listing of everything or of one kind)."""
    return any(filters.get(k) not in (None, "") for k in QUICK_FILTERS)
