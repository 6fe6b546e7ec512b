"""A page of a listing (of everything, of one kind, or with the filters of
:mod:`zoo.db.listing_sql`), read from a PostgreSQL registry through libpq alone
(:mod:`zoo.db.libpq`).

The PostgreSQL counterpart of :mod:`zoo.db.sqlite_page`, for what `zoo ls` reads:
importing SQLAlchemy and psycopg takes 0.4 s of a `zoo ls` process, and the page needs
none of their machinery. The connection is kept for the next page, as the registry's
pool keeps its own. Tests check that both give the same pages.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import threading
from urllib.parse import parse_qsl, unquote

from zoo.db import listing_sql
from zoo.db.entities import EVERY_KIND_TOTAL, ArtifactSummary, summary_from_row
from zoo.db.libpq import Connection, LibpqError
from zoo.db.sqlite_file import head_revision

# SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), so that the page is read
# from the database the registry would open.
_URL = re.compile(
    r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)


CONNECT_TIMEOUT_S = 10


def connect_params(url: str) -> dict[str, str] | None:
    """The libpq keywords psycopg connects with for ``url`` through SQLAlchemy (its psycopg
    dialect's ``create_connect_args``), the client encoding set to UTF-8 and, unless the
    URL sets one, a connection timeout; None for another driver's URL, one naming several
    hosts, or one repeating an option."""
    found = _URL.match(url)
    if found is None or found["name"] != "postgresql+psycopg":
        return None
    params: dict[str, str] = {}
    parts = {
        "host": found["ipv4host"] or found["ipv6host"],
        "dbname": found["database"] and unquote(found["database"]),
        "user": found["username"] and unquote(found["username"]),
        "password": found["password"] and unquote(found["password"]),
        "port": found["port"],
    }
    for key, value in parts.items():
        if value:  # SQLAlchemy passes no empty part
            params[key] = value
    if "," in params.get("host", ""):
        return None  # several hosts
    port = params.get("port")
    if port is not None:
        if not (port.isascii() and port.isdigit()):
            return None  # SQLAlchemy refuses it: the registry says so
        params["port"] = str(int(port))
    options = parse_qsl(found["query"] or "")
    keys = [k for k, _ in options]
    if len(set(keys)) != len(keys):  # SQLAlchemy reads a list: several hosts
        return None
    for key, value in options:
        if key in ("host", "port") and ("," in value or ":" in value):
            return None  # several hosts, or host:port in one
        params[key] = value
    if any("\x00" in v for v in params.values()):
        return None  # libpq reads C strings: it would read up to the NUL, another value
    params["client_encoding"] = "UTF8"  # the text this module decodes
    # A server that does not answer would hold `zoo ls` twice (here, then the registry's
    # own connection, which psycopg gives 130 s): this path gives up sooner.
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    return params


# Connections kept between pages, one per database; a few, as the engines are.
_KEPT = 4
_IDLE: collections.OrderedDict[tuple, Connection] = collections.OrderedDict()
_LOCK = threading.Lock()


def _ask(params: dict[str, str], sql: str, args: list[str]) -> list[tuple[str | None, ...]]:
    """The rows of one statement on a kept connection to ``params``' database, or a new
    one; a kept one the server has closed since (a restart, an idle timeout) is replaced
    once.

    Raises:
        LibpqError: no connection, or the statement failed.
    """
    key = tuple(sorted(params.items()))
    with _LOCK:  # a connection serves one thread at a time: taken out while in use
        connection = _IDLE.pop(key, None)
    kept = connection is not None
    if connection is None:
        connection = Connection(params)
    try:
        rows = connection.query(sql, args)
    except LibpqError:
        gone = not connection.alive
        connection.close()
        if not (kept and gone):
            raise
        connection = Connection(params)
        try:
            rows = connection.query(sql, args)
        except LibpqError:
            connection.close()
            raise
    with _LOCK:
        if key in _IDLE:  # another thread kept one meanwhile: one is enough
            connection.close()
        else:
            _IDLE[key] = connection
        while len(_IDLE) > _KEPT:
            _IDLE.popitem(last=False)[1].close()
    return rows


def close_kept() -> None:
    """Close the kept connections (at exit)."""
    with _LOCK:
        while _IDLE:
            _IDLE.popitem()[1].close()


def _forget_in_child() -> None:
    # A forked child drops its parent's connections unclosed (closing one would end the
    # parent's session) and opens its own.
    global _LOCK
    _LOCK = threading.Lock()
    for connection in _IDLE.values():
        connection.forget()
    _IDLE.clear()


atexit.register(close_kept)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


# One JSON array per artifact, the page one JSON array of them: a value read through ctypes
# costs a call or two (about a microsecond each), so a page of 50 rows of 14 columns
# would cost more than the statement; one value parsed by the json module costs little.
_ITEM = (
    "json_build_array(p.id, p.kind, p.name, p.family, p.content_hash, p.virtual, "
    # zoo writes UTC; read as UTC whatever the session's time zone
    """to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), """
    "p.created_by, p.deleted_at IS NOT NULL, p.tensor_count, p.nbytes, p.layers, p.hidden, "
    "coalesce(n.names, '{}'))"
)
_PAGE_COLUMNS = (
    "a.id, a.kind, a.name, a.family, a.content_hash, a.virtual, a.created_at, a.created_by, "
    "a.deleted_at, a.tensor_count, a.nbytes, a.layers, a.hidden"
)
# The page's aliases, gathered once for its ids rather than looked up row by row: the
# planner would scan a small alias table once per row (see zoo.db.search._with_aliases).
_NAMES = (
    "SELECT al.artifact_id, array_agg(al.name) AS names FROM aliases al "
    "JOIN p ON al.artifact_id = p.id GROUP BY al.artifact_id"
)


def read_page(
    params: dict[str, str],
    *,
    kind: str | None,
    include_deleted: bool,
    limit: int | None,
    after: int | None,
    newest_first: bool,
    **filters,
) -> tuple[list[ArtifactSummary], int, str | None] | None:
    """(items, total, cursor of the next page or None), as :func:`zoo.db.search.page`
    gives them; None when the database's schema is not the one this zoo reads.
    ``filters``: :data:`zoo.db.listing_sql.QUICK_FILTERS`.

    One statement, so the revision, the total and the page come from one snapshot.

    Raises:
        LibpqError: no connection, or the statement failed (a database without zoo's
            tables, say).
    """
    args: list[str] = []

    def arg(value: object) -> str:
        args.append(str(value))
        return f"${len(args)}"

    where = listing_sql.conditions(arg, kind=kind, include_deleted=include_deleted, **filters)
    if listing_sql.counted(filters):  # the matches of the same conditions (parameters) counted
        total = "SELECT count(*) FROM artifacts a WHERE " + " AND ".join(where)
    else:
        column = "t.kept + t.removed" if include_deleted else "t.kept"
        total = f"SELECT coalesce(sum({column}), 0) FROM artifact_totals t"
        total += (
            f" WHERE t.kind = {arg(kind)}" if kind is not None else f" WHERE {EVERY_KIND_TOTAL}"
        )
    if after is not None:
        where.append(f"a.id {'<' if newest_first else '>'} {arg(after)}")
    order = "DESC" if newest_first else "ASC"
    page = f"SELECT {_PAGE_COLUMNS} FROM artifacts a"
    if where:
        page += " WHERE " + " AND ".join(where)
    page += f" ORDER BY a.id {order}"
    if limit is not None:
        page += f" LIMIT {arg(limit + 1)}"  # one more tells whether a next page exists
    sql = (
        f"WITH p AS ({page}), n AS ({_NAMES}) "
        "SELECT (SELECT version_num FROM alembic_version), "
        f"({total}), "
        f"(SELECT coalesce(json_agg({_ITEM} ORDER BY p.id {order}), '[]') "
        "FROM p LEFT JOIN n ON n.artifact_id = p.id)"
    )
    rows = _ask(params, sql, args)
    if len(rows) != 1 or rows[0][0] != head_revision():
        return None
    _, count, items_json = rows[0]
    found = json.loads(items_json)
    more = limit is not None and len(found) > limit
    found = found[:limit] if limit is not None else found
    items = [summary_from_row(item) for item in found]
    return items, int(count), (str(items[-1].id) if more else None)
