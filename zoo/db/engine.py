"""Engines, sessions and the schema version gate.

SQLite (the embedded default) runs with WAL, foreign keys on and a busy timeout;
PostgreSQL for many writers. A brand-new database is created at head on first use, under
a lock so that many processes born at once create it exactly once; a database at another
revision is refused with the exact command that fixes it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    NoSuchModuleError,
    OperationalError,
)

from zoo.config import redact_url
from zoo.db.sqlite_file import BUSY_TIMEOUT_S as SQLITE_BUSY_TIMEOUT_S
from zoo.db.sqlite_file import SQLiteFile, head_revision, sqlite_file
from zoo.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InvalidInputError,
    SchemaOutdatedError,
    StorageError,
    ZooError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Any fixed 64-bit key: PostgreSQL advisory lock that serializes schema creation.
_PG_SCHEMA_LOCK = 0x7A6F6F5F736368
_PG_LINEAGE_LOCK = 0x7A6F6F5F6C696E


def make_engine(url: str, *, create_folder: bool = False) -> Engine:
    """Create an engine for ``url`` with zoo's connection settings.

    Args:
        url: a SQLAlchemy URL.
        create_folder: create a SQLite file's missing folder (zoo's own home); a folder
            named explicitly must exist, or the URL is more likely mistyped than new.
    """
    target = _target(url, create_folder=create_folder)
    return _sqlite_engine(url, target) if isinstance(target, SQLiteFile) else _engine(url)


# One engine per database per process, as SQLAlchemy advises (its tutorial,
# docs.sqlalchemy.org/en/20/tutorial/engine.html: "typically a global object created just
# once for a particular database server"): registries opened one after
# another (a notebook, a script, the CLI called in-process) share its pool of open
# connections and its cache of compiled statements, which a new engine builds again (most
# of a page's time, and a PostgreSQL connection's set-up). A few are kept; one let go is
# disposed, which closes its idle connections and leaves those in use working.
_SHARED: collections.OrderedDict[tuple, Engine] = collections.OrderedDict()
_SHARED_KEPT = 8
_SHARED_LOCK = threading.Lock()


def shared_engine(url: str, *, create_folder: bool = False) -> Engine:
    """The process's engine for ``url`` (see :func:`make_engine`), made on first use.

    A SQLite file is checked on every call as :func:`make_engine` checks it; another file
    at that path since (deleted and made again, restored from a backup by rename), or
    another access mode, gets a new engine.
    """
    target = _target(url, create_folder=create_folder)
    if isinstance(target, SQLiteFile):
        stat = target.path.stat()
        key: tuple = (url, target.uri, stat.st_dev, stat.st_ino)
    else:
        key = (url,)
    with _SHARED_LOCK:
        engine = _SHARED.get(key)
        if engine is not None:
            _SHARED.move_to_end(key)
            return engine
        engine = _sqlite_engine(url, target) if isinstance(target, SQLiteFile) else _engine(url)
        _SHARED[key] = engine
        while len(_SHARED) > _SHARED_KEPT:
            _SHARED.popitem(last=False)[1].dispose()
        return engine


def sqlite_identity(engine: Engine) -> tuple[str, tuple[int, int]] | None:
    """A SQLite engine's file and its (device, inode) now; None for PostgreSQL."""
    path = getattr(engine, "zoo_file", None)
    if path is None:
        return None
    st = os.stat(path)
    return str(path), (st.st_dev, st.st_ino)


def dispose_shared() -> None:
    """Close the shared engines' idle connections and forget them (at exit)."""
    with _SHARED_LOCK:
        while _SHARED:
            _SHARED.popitem()[1].dispose()


def _forget_shared_in_child() -> None:
    # A forked child must not use its parent's connections (they are the parent's
    # sockets and file locks): it drops them unclosed and opens its own.
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    for engine in _SHARED.values():
        engine.dispose(close=False)
    _SHARED.clear()


atexit.register(dispose_shared)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared_in_child)


def check_db_url(url: str, *, driver: bool = False):
    """``url`` parsed, when it is a URL zoo can open: SQLite (naming a file) or
    PostgreSQL, a numeric port, no unescaped '@' in its password, and with ``driver``,
    its driver installed; InvalidInputError, in one line with the password masked, when
    not. Nothing is opened."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 -- a port that is not a number fails here, not at connect
    except (ArgumentError, ValueError) as exc:
        raise InvalidInputError(
            f"Database URL {redact_url(url)!r} is not a valid SQLAlchemy URL "
            "(e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE)."
        ) from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidInputError(
            f"Database URL {redact_url(url)!r} names a {parsed.get_backend_name()!r} "
            "database; zoo keeps its registry in SQLite (sqlite:///PATH) or PostgreSQL "
            "(postgresql+psycopg://...)."
        )
    if "@" in (parsed.host or ""):  # the password's unescaped '@' ended it early
        raise InvalidInputError(
            f"Database URL {redact_url(url)!r} holds an '@' in its password or user name; "
            "write it as %40."
        )
    if parsed.get_backend_name() == "sqlite":
        from zoo.db.sqlite_file import check_names_a_file

        check_names_a_file(url, parsed.database)
    if driver:
        try:
            parsed.get_dialect().import_dbapi()
        except (NoSuchModuleError, ImportError) as exc:
            raise _no_driver(url) from exc
    return parsed


def _no_driver(url: str) -> InvalidInputError:
    return InvalidInputError(
        f"Database URL {redact_url(url)!r} needs a driver that is not installed "
        "(for PostgreSQL: pip install 'zoo[postgres]')."
    )


def _target(url: str, *, create_folder: bool) -> SQLiteFile | None:
    """What ``url`` opens: a checked SQLite file, or None for a server's database."""
    parsed = check_db_url(url, driver=True)  # before a SQLite file is made for it
    if parsed.get_backend_name() == "sqlite":
        return sqlite_file(url, parsed.database, create_folder=create_folder)
    return None


def _engine(url: str) -> Engine:
    try:
        engine = create_engine(url)
    except (NoSuchModuleError, ImportError) as exc:  # no dialect, or no DBAPI module for it
        raise _no_driver(url) from exc
    _ping_when_idle(engine)
    return engine


# A pooled connection that sat idle may have been closed by the server (a restart, an idle
# timeout, a firewall); one back in the pool for less than this is asked to prove it works
# by its next statement. SQLAlchemy's pool_pre_ping asks every time, a round trip per
# checkout: half of what a page of a listing costs on a warm connection.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection at checkout when it has been idle for PING_AFTER_IDLE_S or more;
    one that does not answer is replaced (the pool retries on DisconnectionError)."""

    def note(_dbapi_connection, record, *_rest) -> None:
        record.info["zoo_idle_since"] = time.monotonic()

    def checkout(dbapi_connection, record, _proxy) -> None:
        idle = time.monotonic() - record.info.get("zoo_idle_since", 0.0)
        if idle < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection is gone: {_first_line(exc)}") from exc

    event.listen(engine, "connect", note)
    event.listen(engine, "checkin", note)
    event.listen(engine, "checkout", checkout)


def _sqlite_engine(url: str, target: SQLiteFile) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    engine.zoo_file = target.path  # the file every connection opens (sqlite_identity)

    def connect(dialect, connection_record, cargs, cparams) -> None:
        cargs[:1] = [target.uri]
        cparams["uri"] = True

    event.listen(engine, "do_connect", connect)
    on_connect = _sqlite_on_connect if target.writable else _sqlite_on_connect_ro
    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


# Python's sqlite3 module opens transactions behind SQLAlchemy's back: not before a SELECT
# (so a read-then-write transaction is not isolated) and not before DDL (so a migration
# killed halfway leaves a schema without a version, which no later process can repair).
# zoo turns that off and emits BEGIN itself, as SQLAlchemy's documentation recommends;
# writers (``WRITE_OPTIONS``) take the write lock up front with BEGIN IMMEDIATE, so they
# queue on the busy timeout instead of failing at commit with "database is locked".
WRITE_OPTIONS = {"zoo_write": True}


@contextlib.contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """Queue this process's write transaction behind the others on the same SQLite file.

    SQLite's busy handler polls with sleeps of up to 100 ms and is unfair: under many
    writers one of them can lose the race again and again and wait for seconds. A
    blocking ``flock`` beside the database is released by the kernel the moment its
    holder is done, so a writer waits only for the transactions queued before it. Blobs
    are never written under it. Other databases (and platforms without ``fcntl``) get no
    lock here: PostgreSQL queues writers itself.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or fcntl is None:
        yield
        return
    check_writable(engine)
    # A new descriptor per transaction: flock excludes open file descriptions, so two
    # threads of one process exclude each other too.
    fd = os.open(
        os.fspath(Path(database).expanduser()) + ".write.lock", os.O_RDWR | os.O_CREAT, 0o666
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_writable(engine: Engine) -> None:
    """Refuse a write to a SQLite file this user cannot write (reads still work), before
    any work is done; other databases answer for themselves.

    Raises:
        StorageError: the file or its folder is read-only here (exit 11, a permission).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        raise StorageError(  # a permission, as for a store this user may not write
            f"The database {path} is read-only for this user: zoo can list, show and audit "
            "with it, but writing needs write access to the file and its folder."
        )


def lock_lineage(session) -> None:
    """Serialize, until this transaction ends, the writers that check the lineage graph
    before adding an edge (a declared link must not close a cycle that another link,
    committed meanwhile, opened). SQLite writers are serialized already (BEGIN IMMEDIATE);
    PostgreSQL's READ COMMITTED would let two such checks pass side by side."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LINEAGE_LOCK})


def _sqlite_on_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get("zoo_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL for zoo's own database (a new one is made in WAL: zoo.db.sqlite_file), never for
    # another project's file, which zoo refuses unchanged: the journal mode is written
    # into the file's header and stays.
    tables = {row[0] for row in cursor.execute(_SQLITE_TABLES)}
    if not tables or "artifacts" in tables:
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"


def _sqlite_on_connect_ro(dbapi_connection, _record) -> None:
    # Read-only: the journal mode is the file's (setting it would be a write).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.close()


# --- Alembic ---------------------------------------------------------------------------


def migrations_path() -> str:
    """Folder of the Alembic scripts, also inside a non-editable install."""
    return str(resources.files("zoo_migrations"))


def alembic_config(connection: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_path())
    # configparser reads % as interpolation: a percent-encoded password (p%40ss) must not
    # end in a traceback that prints it.
    url = connection.engine.url.render_as_string(False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["connection"] = connection
    return cfg


def _scripts():
    """zoo's Alembic migration scripts (no database needed)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", migrations_path())
    return ScriptDirectory.from_config(cfg)


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def stamped_revision(connection: Connection, *, with_tables: bool = False) -> str | None:
    """The revision in alembic_version read with one query (None without the table), the
    check every command makes before its work. ``with_tables``: the query names zoo's
    artifacts table too, so another project's database stamped with a revision id zoo
    also uses (zoo's head) fails it, and :func:`ensure_schema` judges it as it judges one
    without the table."""
    query = "SELECT version_num FROM alembic_version"
    if with_tables:
        query += " WHERE NOT EXISTS (SELECT 1 FROM artifacts WHERE 1 = 0)"
    try:
        rows = connection.execute(text(query)).scalars().all()
    except DBAPIError:  # no such table: an empty database, or not zoo's
        connection.rollback()
        return None
    return rows[0] if len(rows) == 1 else None


def _foreign_revision(connection: Connection, current: str | None) -> bool:
    """Whether ``current`` is another project's Alembic revision: any revision in a
    database with none of the tables, named as only zoo names them, that every zoo schema
    has had since its first (a newer zoo's registry has them too; a zoo registry missing
    one table is a damaged registry, not someone else's). Another project numbering its
    revisions as zoo does (``0003``) is no zoo registry: upgrading it would add zoo's
    tables beside its own, and a downgrade would drop a table of its that shares a name
    with one of zoo's."""
    if current is None:
        return False
    tables = set(inspect(connection).get_table_names())
    return not tables & {"artifact_tensors", "family_defaults"}


def _others(connection: Connection) -> bool:
    """Whether the database is another project's: tables without zoo's schema version, or
    a revision beside none of zoo's tables (:func:`_foreign_revision`)."""
    current = current_revision(connection)
    return (current is None and _has_any_table(connection)) or _foreign_revision(
        connection, current
    )


def _has_any_table(connection: Connection) -> bool:
    # An empty alembic_version table is what `zoo db downgrade base` leaves: no schema.
    return bool(set(inspect(connection).get_table_names()) - {"alembic_version"})


def _is_known_revision(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(
    engine: Engine, revision: str = "head", *, on_wait: Callable[[str], None] | None = None
) -> tuple[str | None, str | None]:
    """Upgrade the schema; returns (revision before, revision after). ``on_wait`` is told,
    in a line, of the sessions a PostgreSQL schema change waits for (see
    :func:`_waiting_for_tables`)."""
    with _schema_lock(engine) as connection:
        before = _zoos_revision(engine, connection, "upgrade")
        _waiting_for_tables(
            connection, "upgrade", on_wait, lambda: _run_alembic(connection, "upgrade", revision)
        )
        return before, current_revision(connection)


def downgrade(
    engine: Engine,
    revision: str,
    *,
    drop_data: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[str | None, str | None]:
    """Downgrade the schema; returns (revision before, revision after).

    Unless ``drop_data``, a downgrade through a migration that would delete what the
    registry recorded is rolled back and refused, naming every loss
    (:mod:`zoo.db.downgrades`)."""
    with _schema_lock(engine) as connection:
        before = _zoos_revision(engine, connection, "downgrade")
        _waiting_for_tables(
            connection,
            "downgrade",
            on_wait,
            lambda: _run_alembic(connection, "downgrade", revision, drop_data=drop_data),
        )
        return before, current_revision(connection)


# How long one try of a PostgreSQL schema change waits for a table's lock. A change waiting
# for a lock has every later query on that table queue behind it, so the whole registry
# (servers, imports, listings) would stop for as long as the longest open transaction; each
# try lets them through after this long, and the change tries again. The practice of
# PostgreSQL migrations under load (GoCardless, "Zero-downtime Postgres migrations - the
# hard parts", 2015; the PostgreSQL manual, lock_timeout).
SCHEMA_LOCK_TRY_MS = 2000
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout


def _waiting_for_tables(
    connection: Connection, verb: str, on_wait: Callable[[str], None] | None, change
) -> None:
    """Run ``change`` (one transaction) on PostgreSQL in tries of
    :data:`SCHEMA_LOCK_TRY_MS` each, until no session holds a table it changes; ``on_wait``
    is told which sessions hold them, once per different set. SQLite's schema change
    waits on its write lock, which no reader blocks (WAL)."""
    if connection.dialect.name != "postgresql":
        change()
        return
    told = None
    while True:
        try:
            change()
            return
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            connection.rollback()
        holders = _table_holders(connection)
        if on_wait is not None and holders != told:
            told = holders
            shown = "; ".join(holders) or "a session that has just ended"
            on_wait(
                f"zoo db {verb}: waiting for {len(holders) or 1} session"
                f"{'s' if len(holders) > 1 else ''} using the registry's tables to end "
                f"{'their transactions' if len(holders) > 1 else 'its transaction'} "
                f"({shown}); the registry serves the others meanwhile"
            )
        time.sleep(0.5)


def _table_holders(connection: Connection) -> list[str]:
    """The other sessions holding a lock on a table of this database, as ``pid N
    (application, state since HH:MM:SS UTC)``, oldest transaction first."""
    rows = connection.execute(
        text(
            "SELECT DISTINCT a.pid, a.application_name, a.state, a.xact_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY a.xact_start NULLS LAST, a.pid"
        )
    ).all()
    connection.rollback()
    from zoo.text import printable

    held = []
    for pid, application, state, since in rows:
        when = f" since {since.astimezone(timezone.utc):%H:%M:%S} UTC" if since else ""
        name = printable(application or "no application name")
        held.append(f"pid {pid} ({name}, {state}{when})")
    return held


def _shown_url(engine: Engine) -> str:
    """The database's URL as an error shows it: SQLAlchemy hides only the password
    before the host, and libpq takes one in the query too (``?password=``)."""
    return redact_url(engine.url.render_as_string(True))


def _zoos_revision(engine: Engine, connection: Connection, verb: str) -> str | None:
    """The database's revision, when it is a zoo registry this zoo knows or an empty
    database: a schema change to anything else is refused as every command refuses to
    open it (a mistyped ZOO_DB_URL must not get zoo's tables, nor a newer zoo's
    registry an older zoo's idea of its migrations)."""
    current = current_revision(connection)
    where = _shown_url(engine)
    if _others(connection):
        raise SchemaOutdatedError(
            f"The database {where} has tables but no zoo schema version; `zoo db {verb}` "
            "changes a zoo registry or an empty database, nothing else."
        )
    if current is not None and not _is_known_revision(current):
        raise SchemaOutdatedError(
            f"The database {where} is at schema revision {current}, newer than this zoo "
            f"knows (its newest is {head_revision()}); upgrade zoo itself (pip install -U zoo)."
        )
    return current


def schema_state(connection: Connection) -> str:
    """In words, what the database is to this zoo."""
    current = current_revision(connection)
    if current is None:
        return "not a zoo registry" if _has_any_table(connection) else "empty"
    if _foreign_revision(connection, current):
        return "not a zoo registry"
    if current == head_revision():
        return "up to date"
    if not _is_known_revision(current):
        return "newer than this zoo: upgrade zoo itself"
    return "out of date: run `zoo db upgrade`"


def _run_alembic(
    connection: Connection, verb: str, revision: str, *, drop_data: bool = False
) -> None:
    """Every migration of ``verb`` to ``revision`` in one transaction (DDL included),
    committed only if no downgrade in it would delete recorded data, or ``drop_data``."""
    from alembic import command
    from alembic.util.exc import CommandError

    from zoo.db.downgrades import LOST

    if not revision.strip():
        raise InvalidInputError(f"zoo db {verb}: name a revision (zoo db current shows them).")
    target = _resolve_target(connection, verb, revision)
    cfg = alembic_config(connection)
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations copy tables; foreign keys must be off while they do. The pragma
        # is a no-op inside a transaction, so it goes to the driver between transactions;
        # the transaction then takes the write lock up front (BEGIN IMMEDIATE), so no
        # writer commits between a downgrade's count of what it deletes and the delete.
        connection.commit()
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        connection.execution_options(**WRITE_OPTIONS)
    if not connection.in_transaction():
        # Begun here, the transaction is the caller's to Alembic, which then neither
        # commits it nor (on SQLite, whose DDL it takes as non-transactional) opens and
        # commits one per migration.
        connection.begin()
    if connection.dialect.name == "postgresql":  # each try's wait (_waiting_for_tables)
        connection.execute(text(f"SET LOCAL lock_timeout = {SCHEMA_LOCK_TRY_MS}"))
    try:
        try:
            getattr(command, verb)(cfg, target)
        except CommandError as exc:  # e.g. a revision that does not exist
            raise InvalidInputError(f"zoo db {verb} {revision}: {_first_line(exc)}.") from exc
        lost = cfg.attributes.get(LOST, [])
        if lost and not drop_data:
            connection.rollback()
            raise ConflictError(  # the registry's records refuse it, as --force refuses
                f"zoo db {verb} {revision} would delete what the registry recorded: "
                f"{'; '.join(lost)}; pass drop_data=True if that is what you want.",
                params=["drop_data"],
            )
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _revision_chain() -> list[str]:
    """zoo's revisions from the first to head, in order (zoo's migrations are one line)."""
    scripts = _scripts()
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def _resolve_target(connection: Connection, verb: str, revision: str) -> str:
    """The revision id (or ``base``) that ``revision`` names, in zoo's words when it names
    none or the wrong way. Every spelling is resolved here, not by Alembic: its answers
    differ by spelling (``upgrade head-1`` at head and ``upgrade base`` did nothing and
    reported success, where ``upgrade 0010`` is refused; ``downgrade head+1`` said "Walked
    too far"; ``downgrade base-1`` did nothing at all).

    Spellings: ``head`` (``heads``), ``base``, a revision id or a prefix naming one, each
    optionally followed by ``+N`` or ``-N``, or ``+N`` / ``-N`` alone, from the database's
    revision."""
    spelled = revision.strip()
    asked = f"zoo db {verb} {spelled}"
    if spelled.startswith("-") and not re.fullmatch(r"-\s*\d+", spelled):
        raise InvalidInputError(f"No such option '{spelled}' (see `zoo db {verb} --help`).")
    match = re.fullmatch(r"(.*?)\s*(?:([+-])\s*(\d+))?", spelled)
    anchor, sign, steps = match.group(1), match.group(2), match.group(3)
    chain = ["base", *_revision_chain()]  # position 0 is the empty schema
    current = current_revision(connection) or "base"
    if current not in chain:  # the callers refuse a newer zoo's registry before this
        raise SchemaOutdatedError(f"{asked}: the database is at {current}, unknown to zoo.")
    here = chain.index(current)
    if not anchor:
        at = here
    elif anchor in ("head", "heads"):
        at = len(chain) - 1
    elif anchor == "base":
        at = 0
    else:
        named = [r for r in chain[1:] if r == anchor] or [
            r for r in chain[1:] if r.startswith(anchor)
        ]
        if not named:
            raise InvalidInputError(
                f"{asked}: zoo has no revision {anchor}; its revisions are {chain[1]} to "
                f"{chain[-1]}, and base (`zoo db current` shows the database's)."
            )
        if len(named) > 1:
            raise InvalidInputError(
                f"{asked}: {anchor} begins several revisions ({', '.join(named)}); give one."
            )
        at = chain.index(named[0])
    if sign:
        at += int(steps) if sign == "+" else -int(steps)
    if at >= len(chain):
        raise InvalidInputError(f"{asked}: nothing is above head ({chain[-1]}).")
    if at < 0:
        raise InvalidInputError(f"{asked}: nothing is below base, the empty schema.")
    target = chain[at]
    if verb == "upgrade" and at < here:
        raise InvalidInputError(
            f"{asked}: the database is at {current}, above {target}; "
            f"`zoo db downgrade {target}` goes down."
        )
    if verb == "downgrade" and at > here:
        raise InvalidInputError(
            f"{asked}: the database is at {current}, below {target}; "
            f"`zoo db upgrade {target}` goes up."
        )
    return target


@contextlib.contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the lock that serializes schema changes across processes."""
    if engine.dialect.name == "sqlite":
        from filelock import FileLock

        database = engine.url.database
        if not database or database == ":memory:":
            with engine.connect() as connection:
                yield connection
            return
        path = Path(database).expanduser()
        if path.is_file():
            with engine.connect() as connection:
                if _others(connection):
                    # Every caller refuses another project's database without changing
                    # it, so it needs no lock, whose file would stay in their folder.
                    # zoo's schema is made in one transaction (_run_alembic): no process
                    # sees one half made and takes it for theirs.
                    yield connection
                    return
        # A plain lock file beside the database; SQLite's own locks do not cover the
        # check-then-create of the schema.
        lock = FileLock(os.fspath(path) + ".schema.lock")
        with lock, engine.connect() as connection:
            yield connection
        return
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            connection.commit()
        try:
            yield connection
        finally:
            if connection.dialect.name == "postgresql":
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SCHEMA_LOCK})
                connection.commit()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def no_room(error: BaseException | None, sqlite_path: str | None = None) -> bool:
    """Whether a database driver's ``error`` is a disk without room: SQLite's "database or
    disk is full", PostgreSQL's disk_full (53100), or SQLite's I/O error while the disk
    of ``sqlite_path`` has (almost) no byte free, as opening one needs room for its
    shared-memory file."""
    code = getattr(error, "sqlite_errorcode", None)
    if getattr(error, "sqlstate", None) == "53100" or (code is not None and code & 0xFF == 13):
        return True
    if code is None or code & 0xFF != 10 or not sqlite_path:
        return False
    try:
        return shutil.disk_usage(Path(sqlite_path).parent).free < 1 << 20
    except OSError:
        return False


def _cannot_open(engine: Engine, exc: OperationalError) -> ZooError:
    """One line naming the database (password masked) and the driver's reason."""
    full = no_room(exc.orig, engine.url.database if engine.dialect.name == "sqlite" else None)
    return (StorageError if full else DatabaseUnavailableError)(
        f"Cannot open the database {_shown_url(engine)}: "
        f"{str(exc.orig).strip().splitlines()[0]}"
        + (" (its disk is full; free some space)." if full else ".")
    )


#: SQLite's SQLITE_NOTADB: the file is not a database (https://sqlite.org/rescode.html).
_SQLITE_NOTADB = 26


def _opening_refused(engine: Engine, exc: DBAPIError) -> ZooError | None:
    """What opening the database failed on, in one line naming it: a file that is not a
    SQLite database is not a registry (exit 5, as another project's tables are); a
    server down or a disk full is :func:`_cannot_open`'s. None: another failure."""
    if getattr(exc.orig, "sqlite_errorcode", None) == _SQLITE_NOTADB:
        return SchemaOutdatedError(
            f"The database {_shown_url(engine)} is not a SQLite database file "
            f"({_first_line(exc.orig)}); point ZOO_DB_URL at an empty database or at a "
            "zoo registry."
        )
    if isinstance(exc, OperationalError):
        return _cannot_open(engine, exc)
    return None


def check_reachable(engine: Engine) -> None:
    """Open a connection, or refuse as every other command refuses a database it cannot
    open: `zoo db` runs at any schema, so :func:`ensure_schema` never opened it first, and
    the driver's own error (its class name, no database named) reached the caller.

    Raises:
        DatabaseUnavailableError: the server is down, the host unknown, the login refused.
        StorageError: its disk is full.
        SchemaOutdatedError: a file that is not a SQLite database.
    """
    with _refusing_to_open(engine), engine.connect():
        pass


@contextlib.contextmanager
def _refusing_to_open(engine: Engine) -> Iterator[None]:
    """A failure to open the database raised as :func:`_opening_refused` says it; any other
    failure as it came."""
    try:
        yield
    except DBAPIError as exc:
        refused = _opening_refused(engine, exc)
        if refused is None:
            raise
        raise refused from exc


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Refuse a database whose schema is not at head; create an empty one at head.

    Raises:
        SchemaOutdatedError: the database exists at another revision.
    """
    head = head_revision()
    with _refusing_to_open(engine), engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # One statement: no BEGIN and ROLLBACK round trips around it.
            connection.execution_options(isolation_level="AUTOCOMMIT")
        current = stamped_revision(connection, with_tables=True)
        if current == head:
            return
    # Decide under the lock: another process may be creating the schema right now (seen
    # empty, with tables but not yet stamped, or stamped with an earlier revision of the
    # same upgrade, it must not be refused).
    with _schema_lock(engine) as connection:
        current = current_revision(connection)
        if create and current is None and not _has_any_table(connection):
            _run_alembic(connection, "upgrade", "head")
            current = current_revision(connection)
        foreign = _foreign_revision(connection, current)
    if current != head or foreign:
        where = _shown_url(engine)
        if current is None or foreign:
            raise SchemaOutdatedError(
                f"The database {where} has tables but no zoo schema version; "
                "point ZOO_DB_URL at an empty database or at a zoo registry."
            )
        if not _is_known_revision(current):
            raise SchemaOutdatedError(
                f"The database {where} is at schema revision {current}, newer than this "
                f"zoo knows (it needs {head}); upgrade zoo itself (pip install -U zoo)."
            )
        raise SchemaOutdatedError(
            f"The database {where} is at schema revision {current} but this zoo needs "
            f"{head}; run `zoo db upgrade`."
        )
