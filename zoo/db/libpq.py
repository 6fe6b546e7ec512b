"""The few calls of libpq, PostgreSQL's C client library, that read a page of a listing.

psycopg talks to PostgreSQL through libpq too; importing it and SQLAlchemy takes 0.4 s,
against a few milliseconds for the page, so `zoo ls` calls the library itself through
ctypes. It loads the libpq that psycopg's binary package ships (the one the registry's
own connections use), else the system's. Statements are sent with their parameters
apart (``PQexecParams``), never spliced into the text, and results are read as text.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

_CONNECTION_OK = 0  # PQstatus
_PGRES_TUPLES_OK = 2  # PQresultStatus


class LibpqError(Exception):
    """libpq is missing, or it could not connect or answer (the message is libpq's)."""


def _candidates() -> list[str]:
    found = []
    spec = importlib.util.find_spec("psycopg_binary")
    for location in (spec.submodule_search_locations or ()) if spec else ():
        # Where its wheels keep it: beside the package on Linux, inside it on macOS.
        found += sorted(glob.glob(str(Path(location).parent / "psycopg_binary.libs/libpq*.so*")))
        found += sorted(glob.glob(str(Path(location) / ".dylibs/libpq*.dylib")))
    return [*found, "libpq.so.5", "libpq.5.dylib"]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    strings = ctypes.POINTER(ctypes.c_char_p)
    for name, restype, argtypes in (
        ("PQconnectdbParams", p, (strings, strings, i)),
        ("PQstatus", i, (p,)),
        ("PQerrorMessage", s, (p,)),
        ("PQexecParams", p, (p, s, i, p, strings, p, p, i)),
        ("PQresultStatus", i, (p,)),
        ("PQntuples", i, (p,)),
        ("PQnfields", i, (p,)),
        ("PQgetisnull", i, (p, i, i)),
        ("PQgetvalue", s, (p, i, i)),
        ("PQclear", None, (p,)),
        ("PQfinish", None, (p,)),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


_LIB: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The loaded libpq.

    Raises:
        LibpqError: no libpq could be loaded.
    """
    global _LIB
    if _LIB is None:
        for candidate in _candidates():
            try:
                _LIB = _declare(ctypes.CDLL(candidate))
                break
            except (OSError, AttributeError):  # not there, or not a libpq
                continue
        else:
            raise LibpqError("no libpq to load (pip install 'zoo[postgres]')")
    return _LIB


def _strings(values: Sequence[str | None]):
    return (ctypes.c_char_p * len(values))(*(None if v is None else v.encode() for v in values))


class Connection:
    """One libpq connection; not for use by two threads at once.

    Raises:
        LibpqError: the connection could not be made.
    """

    def __init__(self, params: Mapping[str, str]) -> None:
        self._lib = library()
        keys = _strings([*params, None])
        values = _strings([*params.values(), None])
        self._conn = self._lib.PQconnectdbParams(keys, values, 0)
        if not self._conn:
            raise LibpqError("libpq could not allocate a connection")
        if not self.alive:
            message = self._message()
            self.close()
            raise LibpqError(message)

    @property
    def alive(self) -> bool:
        return bool(self._conn) and self._lib.PQstatus(self._conn) == _CONNECTION_OK

    def _message(self) -> str:
        raw = self._lib.PQerrorMessage(self._conn) or b""
        return raw.decode(errors="replace").strip() or "libpq gave no message"

    def query(self, sql: str, params: Sequence[str] = ()) -> list[tuple[str | None, ...]]:
        """The rows of one statement, each value as PostgreSQL's text or None for NULL.

        Raises:
            LibpqError: the statement failed or the connection is gone.
        """
        lib = self._lib
        if not self._conn:
            raise LibpqError("the connection is closed")
        result = lib.PQexecParams(
            self._conn, sql.encode(), len(params), None, _strings(list(params)), None, None, 0
        )
        try:
            if not result or lib.PQresultStatus(result) != _PGRES_TUPLES_OK:
                raise LibpqError(self._message())
            width = lib.PQnfields(result)
            return [
                tuple(
                    None
                    if lib.PQgetisnull(result, row, col)
                    else lib.PQgetvalue(result, row, col).decode()
                    for col in range(width)
                )
                for row in range(lib.PQntuples(result))
            ]
        finally:
            lib.PQclear(result)

    def close(self) -> None:
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = None

    def forget(self) -> None:
        """Drop the connection without closing it: a forked child's copy of its parent's
        socket, whose closing would end the parent's session."""
        self._conn = None
