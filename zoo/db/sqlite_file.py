"""Opening a SQLite registry file, and the schema revision zoo's migrations end at.

Neither needs SQLAlchemy: `zoo ls` on a SQLite registry reads its page with the standard
library's sqlite3 (:mod:`zoo.db.sqlite_page`), and the engine (:mod:`zoo.db.engine`)
opens the same file the same way.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib.util
import os
import re
import urllib.parse
from pathlib import Path

from zoo.config import redact_url
from zoo.errors import DatabaseUnavailableError, InvalidInputError
from zoo.text import is_utf8

BUSY_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class SQLiteFile:
    path: Path
    uri: str  # the file's sqlite3 URI, with the access mode zoo opens it in
    writable: bool


def check_names_a_file(url: str, database: str | None) -> None:
    """Refuse a SQLite URL that names no file: an in-memory or URI database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise InvalidInputError(
            f"Database URL {redact_url(url)!r} names no SQLite file (an in-memory or URI "
            "database): a registry must outlive the command, so give a file, e.g. "
            "sqlite:////home/me/.zoo/zoo.db."
        )


def missing_folder(url: str, folder: Path) -> DatabaseUnavailableError:
    """A named database's folder is missing: the URL is more likely mistyped than new."""
    return DatabaseUnavailableError(
        f"The folder {folder} of the database {redact_url(url)} does not exist; create it, "
        "or correct the database URL (`zoo config show` says where it is set)."
    )


def sqlite_file(url: str, database: str | None, *, create_folder: bool) -> SQLiteFile:
    """The SQLite file ``url`` names, checked, and how to open it, so that connections
    never create the file behind zoo's back.

    sqlite3 creates a missing file on connect, so a mistyped path, a deleted database or
    one truncated to 0 bytes would silently become a new, empty registry. zoo creates a
    new database file itself (complete, in WAL mode, renamed into place) and then opens
    it read-write only if it exists (``mode=rw``), or read-only (``mode=ro``) when this
    user cannot write it, so that reads still work.
    """
    check_names_a_file(url, database)
    path = Path(database).expanduser().absolute()
    if not is_utf8(str(path)):  # SQLite takes a file's name as UTF-8 text
        raise InvalidInputError(
            f"The database path {str(path)!a} is not UTF-8 text; give the registry (ZOO_HOME "
            "or the database URL) a folder whose path is."
        )
    folder = path.parent
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        if not create_folder:
            raise missing_folder(url, folder)
        folder.mkdir(parents=True, exist_ok=True)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _create(path)
        size = path.stat().st_size
    if size == 0:
        raise DatabaseUnavailableError(
            f"The database {path} is empty (0 bytes): it was truncated or emptied, which zoo "
            "never does; restore it from a backup, or delete it to start a new registry."
        )
    return opened(path)


def opened(path: Path) -> SQLiteFile:
    """How zoo opens the existing database file ``path``: read-write where this user can
    write it and its folder, read-only otherwise."""
    folder = path.parent
    writable = os.access(path, os.W_OK) and os.access(folder, os.W_OK)
    mode = "rw" if writable else "ro"
    if not writable and not os.access(folder, os.W_OK) and not _shm(path).exists():
        # WAL readers need the -shm index; where none exists and none can be created, the
        # file is read as it is (no writer can have it open without one).
        mode += "&immutable=1"
    uri = f"file:{urllib.parse.quote(str(path))}?mode={mode}"
    return SQLiteFile(path, uri, writable)


_PLAIN_URL = re.compile(r"sqlite(?:\+pysqlite)?:///([^?]+)")


def existing(url: str) -> SQLiteFile | None:
    """The database file a plain ``sqlite:///PATH`` URL names, as zoo opens it, when it
    exists and is not empty; None for any other URL or file (the engine's checks answer
    for those, creating a new registry or saying what is wrong)."""
    found = _PLAIN_URL.fullmatch(url)
    if found is None:
        return None
    database = urllib.parse.unquote(found.group(1))  # as SQLAlchemy's make_url reads it
    if database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().absolute()
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
    except OSError:
        return None
    return opened(path)


def _shm(path: Path) -> Path:
    return path.with_name(path.name + "-shm")


def _create(path: Path) -> None:
    """Create an empty database in WAL mode at ``path`` atomically (a hard link of a
    finished file), so that no process ever sees a half-made one; another process
    creating it at the same moment is fine."""
    import sqlite3
    import uuid

    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.creating")
    try:
        connection = sqlite3.connect(temp)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # writes the header: 4 KiB
        finally:
            connection.close()
        # SQLite makes its files 0644 whatever the umask; a team's registry in a group
        # folder (umask 002) must be writable by the group, as zoo's other files are. The
        # WAL and shared-memory files take the database file's mode.
        os.chmod(temp, 0o666 & ~_umask())
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # created by another process meanwhile
        except OSError:  # no hard links here (some network file systems)
            if not path.exists():
                os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without setting it where Linux tells it (setting it, even
    for an instant, would apply to files other threads create meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@functools.cache
def head_revision() -> str:
    """The revision zoo's migrations end at, read from the scripts' ``revision`` and
    ``down_revision`` lines: every command checks it, and Alembic takes longer to import
    than `zoo ls` takes to answer (tests check it agrees with Alembic's)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in _migration_scripts():
        if not script.name.endswith(".py"):
            continue
        text = script.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(text)
        if down is not None:
            parents.update(_QUOTED.findall(down.group(1)))
    heads = sorted(revisions - parents)
    if len(heads) != 1:  # a packaging error, not a user error
        raise RuntimeError(f"zoo's migrations must have exactly one head, found {heads}")
    return heads[0]


def _migration_scripts():
    # The package's folder where it is one (an installed wheel, a checkout): importlib's
    # resources, which also read zipped packages, cost `zoo ls` 4 ms to import.
    spec = importlib.util.find_spec("zoo_migrations")
    for location in (spec.submodule_search_locations or ()) if spec else ():
        folder = Path(location) / "versions"
        if folder.is_dir():
            return folder.iterdir()
    from importlib import resources

    return resources.files("zoo_migrations").joinpath("versions").iterdir()


_REVISION = re.compile(r"^revision\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")
