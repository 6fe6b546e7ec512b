"""The Python API: everything the CLI does goes through :class:`Registry`.

:class:`Registry` (and with it SQLAlchemy, a third of a second to import) loads on first
use, so a client of a zoo server (``ZOO_ENDPOINT``) never imports the database layer, and
:func:`quick_page` answers `zoo ls` (everything, one kind, or the filters it reads most)
from a SQLite or PostgreSQL registry without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from zoo.config import endpoint_from_env, load_settings

if TYPE_CHECKING:
    from zoo.api.registry import Registry
    from zoo.db.entities import Page


def connect(
    *,
    home: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    store_url: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Registry:
    """Open the registry configured by arguments, environment or config file.

    With ``endpoint`` (or ``ZOO_ENDPOINT`` in the environment, when no database or home is
    given), the registry is a zoo server's: a :class:`zoo.client.RemoteRegistry` with the
    same methods, authenticated by ``token`` (or ``ZOO_TOKEN``).

    Example:
        >>> import zoo
        >>> reg = zoo.connect(home="/tmp/zoo-doc")   # doctest: +SKIP
    """
    from zoo.errors import InvalidInputError

    for what, value in (("endpoint", endpoint), ("db_url", db_url), ("store_url", store_url)):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{what} is a URL, not a {type(value).__name__}.")
    if home is not None and (not isinstance(home, (str, os.PathLike)) or not str(home)):
        raise InvalidInputError(f"home is a folder's path, not {home!r:.60}.")
    if endpoint is None and home is None and db_url is None and store_url is None:
        endpoint, env_token = endpoint_from_env() or (None, None)
        token = token or env_token
    if endpoint:
        from zoo.client import RemoteRegistry

        return RemoteRegistry(endpoint, token)  # type: ignore[return-value]
    from zoo.api.registry import Registry

    return Registry(load_settings(home=home, db_url=db_url, store_url=store_url))


def quick_page(
    *,
    kind: str | None = None,
    include_deleted: bool = False,
    limit: int | None = 50,
    after: str | None = None,
    newest_first: bool = True,
    **filters,
) -> Page | None:
    """The page that ``connect().search(...)`` gives for the same arguments, read straight
    from the configured registry's database: a SQLite file with the standard library,
    PostgreSQL through libpq, without SQLAlchemy or psycopg. ``filters``: ``family``,
    ``name``, ``min_layers``, ``max_layers``, ``min_hidden``, ``max_hidden`` and
    ``created_by``, as ``search`` takes them.

    None where it cannot be answered so (a zoo server, another driver, a file zoo has not
    created yet, a database that cannot be reached or has no registry, a schema at
    another revision, a filter it does not read, an argument the registry refuses): open
    the registry and ask it, and it says what is wrong.
    """
    from zoo.db import listing_sql
    from zoo.db.entities import KINDS, Page, parse_cursor
    from zoo.errors import InvalidInputError

    if endpoint_from_env() is not None:
        return None
    try:
        cursor = parse_cursor(after)
    except InvalidInputError:
        return None
    valid = (
        (kind is None or kind in KINDS)
        and (limit is None or (type(limit) is int and 1 <= limit < 1 << 62))
        and listing_sql.answerable(filters)
    )
    if not valid:
        return None
    if isinstance(filters.get("family"), str) and filters["family"]:
        from zoo.families import family_filter

        filters["family"], model_type = family_filter(filters["family"])
        if model_type is not None:  # read from configs (t5): the registry's to answer
            return None
    shape = dict(
        kind=kind,
        include_deleted=include_deleted,
        limit=limit,
        after=cursor,
        newest_first=newest_first,
        **filters,
    )
    found = _read_quick_page(load_settings().db_url, shape)
    if found is None:
        return None
    items, total, cursor = found
    return Page(tuple(items), total, cursor)


def _read_quick_page(db_url: str, shape: dict[str, Any]):
    """(items, total, next cursor) from the page reader of ``db_url``'s back end, or None
    when it cannot answer."""
    from zoo.db import sqlite_file

    db = sqlite_file.existing(db_url)
    if db is not None:
        import sqlite3

        from zoo.db import sqlite_page

        try:
            return sqlite_page.read_page(db, **shape)
        except sqlite3.Error:
            return None
    from zoo.db import pg_page

    params = pg_page.connect_params(db_url)
    if params is None:
        return None
    from zoo.db.libpq import LibpqError

    try:
        return pg_page.read_page(params, **shape)
    except (LibpqError, UnicodeError):  # UnicodeError: a URL libpq cannot be given
        return None


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from zoo.api.registry import Registry

        return Registry
    raise AttributeError(f"module 'zoo.api' has no attribute {name!r}")


__all__ = ["Registry", "connect", "quick_page"]
