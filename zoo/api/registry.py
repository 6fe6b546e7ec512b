"""The registry handle: settings, database engine, blob store, and transactions."""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import random
import time
from collections.abc import Callable, Iterator
from functools import cached_property

from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from zoo.api import store_claim
from zoo.api.arguments import check_flags
from zoo.api.store_claim import Place
from zoo.config import Settings, load_settings, redact_url
from zoo.db import engine as db_engine
from zoo.db import queries
from zoo.errors import DatabaseUnavailableError, InvalidInputError, SchemaOutdatedError
from zoo.store import BlobStore, open_store

# How often a handle held open reads the schema's revision again (one query).
_SCHEMA_RECHECK_S = 5.0

# Contention on SQLite ("database is locked") and serialization failures on PostgreSQL
# are retried with jittered backoff so they never reach the user.
_RETRIES = 8


def _transient(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text or "deadlock" in text or "serializ" in text


_READ_ONLY = "A read session of zoo's registry cannot write; use a transaction."


def _refuse_writes(state) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise RuntimeError(_READ_ONLY)


def _refuse_flush(session, _context, _instances) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError(_READ_ONLY)


def _factories(engine: Engine) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """The read and the write session factories of ``engine``, made once per engine (kept
    on it): registries are opened one after another on the process's engine (a CLI call,
    a script), and building a factory's options and listeners took longer than a page."""
    made = engine.__dict__.get("_zoo_session_factories")
    if made is not None:
        return made
    if engine.dialect.name != "postgresql":
        reads = sessionmaker(engine, expire_on_commit=False)
    else:
        # At READ COMMITTED each statement of a transaction reads its own snapshot, so a
        # read loses nothing outside one, and saves the BEGIN and ROLLBACK round trips
        # (a third of a listing's time). Such a session must never write: it would commit.
        reads = sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        event.listen(reads, "do_orm_execute", _refuse_writes)
        event.listen(reads, "before_flush", _refuse_flush)
    # Same pool; on SQLite these transactions take the write lock at BEGIN.
    writes = sessionmaker(
        engine.execution_options(**db_engine.WRITE_OPTIONS), expire_on_commit=False
    )
    engine.__dict__["_zoo_session_factories"] = (reads, writes)
    return reads, writes


def current_user() -> str:
    # getpass.getuser reads these, then the password database (a file, on every call):
    # asked again only when one of them changes.
    return _user(tuple(os.environ.get(name) for name in _USER_VARIABLES))


_USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


@functools.lru_cache(maxsize=8)
def _user(_variables: tuple[str | None, ...]) -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return os.environ.get("USER", "unknown")


def _reopened(settings: Settings, check_schema: bool) -> Registry:
    return Registry(settings, check_schema=check_schema)


class Registry:
    """A zoo registry: a database plus a blob store.

    Open one with :func:`zoo.connect`. The schema is checked (or created at head for a new
    database) on first use.
    """

    def __init__(self, settings: Settings | None = None, *, check_schema: bool = True) -> None:
        self.settings = settings or load_settings()
        self._check_schema = check_schema
        self._schema_ok = False
        self._schema_seen = 0.0  # time.monotonic() of the last look at the schema
        self._schema_lost: str | None = None  # what it is since it changed under this handle
        self._file: tuple[str, tuple[int, int]] | None = None  # see _follow_file

    def __repr__(self) -> str:
        s = self.settings.redacted()
        return f"Registry(db_url={s['db_url']!r}, store_url={s['store_url']!r})"

    def __reduce__(self):
        # Sent to another process (a process pool's argument), a handle is opened anew
        # there from its settings, as before its first use: its engine, connections and
        # store belong to this process.
        return _reopened, (self.settings, self._check_schema)

    @cached_property
    def engine(self) -> Engine:
        # zoo's own home is created on first use; a folder someone named must exist.
        own = self.settings.db_url_from == "default"
        engine = db_engine.shared_engine(self.settings.db_url, create_folder=own)
        self._file = db_engine.sqlite_identity(engine)
        return engine

    def _follow_file(self) -> None:
        """A SQLite registry is the file at its path, and a long-lived handle (a server's)
        must not go on reading and writing a file no longer there: its writes would be
        acknowledged and lost. One removed or replaced since this handle opened it is
        refused, not followed: the write-ahead log beside it is the old file's while this
        process holds it open, and SQLite would read it into the new file (malformed)."""
        opened = self.__dict__.get("_file")
        if opened is None:  # PostgreSQL, or not opened yet
            return
        path, identity = opened
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DatabaseUnavailableError(
                f"The database {path} was removed while this process had it open; stop "
                "every zoo process using it, restore it, and start again."
            ) from None
        if (st.st_dev, st.st_ino) != identity:
            raise DatabaseUnavailableError(
                f"The database {path} was replaced while this process had it open; stop "
                "every zoo process using the registry (its write-ahead log is the old "
                "file's), then start again: a restored backup is read from then on."
            )

    @cached_property
    def store(self) -> BlobStore:
        url = self.settings.store_url
        if url.partition("://")[0].lower() == "memory" and "://" in url:
            raise InvalidInputError(
                f"Store URL {redact_url(url)!r} is in this process's memory: a registry's "
                "blobs must outlive the command, so give a folder or s3://BUCKET/PREFIX."
            )
        store = open_store(url)
        # Claimed at this registry's first write or reuse of a blob (BlobStore.owner), not
        # by a look: a registry pointed at another's store by mistake adds no owner.
        store.owner = lambda: self.registry_id
        store.owner_place = lambda: place.text() if (place := self._place()) else ""
        store.confirm_owner = self._confirm_claim
        return store

    def _place(self) -> Place | None:
        """Where this registry's database is, as a store's claim records it: the SQLite
        file's host, path and identity (a copy of the file carries the registry's id), and
        where its store is; None for PostgreSQL."""
        found = db_engine.sqlite_identity(self.engine)
        return store_claim.here(found[0], self.store.location) if found else None

    def _confirm_claim(self, recorded: str) -> bool:
        """Whether a claim's text names this registry's file as it no longer is (its first
        write records it anew); refused when it names another file with this registry's
        id (zoo.api.store_claim.check)."""
        place = self._place()
        if place is None:
            return False  # PostgreSQL: not told apart by a claim (docs/operations.md)
        return store_claim.check(self.store, self.registry_id, recorded, place, command=None)

    @cached_property
    def registry_id(self) -> str:
        """This registry's id (a uuid4 made with its schema), recorded in its stores."""
        self.ensure_schema()
        with self.session() as session:
            return queries.registry_id(session)

    @property
    def _sessions(self) -> sessionmaker[Session]:
        return _factories(self.engine)[0]

    @property
    def _write_sessions(self) -> sessionmaker[Session]:
        return _factories(self.engine)[1]

    def check_writable(self, *, blobs: bool = True) -> None:
        """Refuse, before any work, a write this registry cannot make: to a read-only
        database, or (``blobs``: the write stores blobs) to a store whose claim names
        another database with this registry's id (zoo.api.store_claim.check)."""
        db_engine.check_writable(self.engine)
        if blobs:
            self.store.check_claim(self.registry_id)

    def _check_wanted(self) -> None:
        """Called as an import, an extract or a materialize records its result (in
        :meth:`get_or_create` and :meth:`driver_write`, which record nothing else). A local
        command is stopped by Ctrl-C itself; a server's registry raises here once the
        client that asked has left (zoo.server.work.ServingRegistry)."""

    def ensure_schema(self) -> None:
        """Refuse a database at another schema revision than this zoo's: at first use, and
        again once a while for a handle held open (a server's: a `zoo db downgrade` under
        it must not leave it reading and writing tables that changed)."""
        if not self._check_schema:
            return
        now = time.monotonic()
        if not self._schema_ok:
            db_engine.ensure_schema(self.engine)
            self._schema_ok, self._schema_seen = True, now
            return
        if now - self._schema_seen > _SCHEMA_RECHECK_S:
            self._schema_seen = now
            with self.engine.connect() as connection:  # one query, Alembic only if changed
                same = db_engine.stamped_revision(connection) == db_engine.head_revision()
                state = "up to date" if same else db_engine.schema_state(connection)
            self._schema_lost = None if state == "up to date" else state
        if self._schema_lost is not None:  # no URL named: a server's callers read this
            raise SchemaOutdatedError(
                f"The database's schema changed while this process had it open; it is now "
                f"{self._schema_lost}. Run again once the schema is this zoo's."
            )

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A read session: nothing it does is committed (on PostgreSQL it refuses to write)."""
        self._follow_file()
        self.ensure_schema()
        with self._sessions() as session:
            yield session

    def transaction(self, work, *, on_conflict=None):
        """Run ``work(session)`` in a transaction, retrying transient contention.

        ``on_conflict(session)`` is called (in a fresh transaction) when ``work`` hits a
        unique constraint because another writer got there first; its result is returned.
        When it returns None, or there is none, ``work`` runs again from the start: it
        checks before it inserts, so the second run sees the winner's committed rows.
        Every attempt rolls back completely before the next one.
        """
        self._follow_file()
        self.ensure_schema()
        for attempt in range(_RETRIES):
            last = attempt == _RETRIES - 1
            try:
                with (
                    db_engine.write_lock(self.engine),
                    self._write_sessions() as session,
                    session.begin(),
                ):
                    return work(session)
            except IntegrityError:
                if last:
                    raise
                if on_conflict is not None:
                    result = self._attempt(on_conflict)
                    if result is not None:
                        return result
            except OperationalError as exc:
                if not _transient(exc) or last:
                    raise
            time.sleep(min(0.2, 0.005 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def driver_write(self, write):
        """``write(engine)``, a write made on the database driver's own connection
        (:mod:`zoo.db.derived_rows`), after the checks every transaction makes first."""
        self._follow_file()
        self.ensure_schema()
        self._check_wanted()
        return write(self.engine)

    def get_or_create(self, find, create):
        """The artifact ``find(session)`` returns, else the one ``create(session)`` inserts,
        in one transaction; when another writer inserts the same content first (a unique
        constraint), the winner is found instead. Content is identity: an import, an
        extraction and a materialization each register their content once this way."""

        def work(session: Session):
            self._check_wanted()  # in the transaction: after any wait for the write lock
            found = find(session)
            return found if found is not None else create(session)

        return self.transaction(work, on_conflict=find)

    def _attempt(self, work):
        """``work(session)`` in one write transaction; None if it lost a race again."""
        try:
            with (
                db_engine.write_lock(self.engine),
                self._write_sessions() as session,
                session.begin(),
            ):
                return work(session)
        except IntegrityError:
            return None
        except OperationalError as exc:
            if not _transient(exc):
                raise
            return None

    def close(self) -> None:
        """Let go of this handle. It holds no connection between calls: each session gives
        its own back to the process's pool for the database (one per database, shared by
        the registries a process opens), which keeps a few idle ones for the next registry
        there and closes them at exit (:func:`zoo.db.engine.dispose_shared` does it now)."""

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def user(self) -> str:
        return current_user()

    # --- the public API; each method delegates to the module that owns the job --------

    def import_checkpoint(
        self,
        source,
        *,
        name: str | None = None,
        revision: str | None = None,
        convert_bin: bool = False,
        progress: bool = False,
        origin: str | None = None,
    ):
        """Register a checkpoint in Hugging Face layout, of any ``model_type``.

        One that no family resizes is catalogued with ``family`` None. The tokenizer
        files, generation and processor configs, chat template and model card are stored
        with it (``files``), and a card's ``base_model`` becomes a lineage edge (from a
        placeholder until that repository is imported).

        Args:
            source: a local folder (config.json + safetensors), or ``ORG/NAME`` resolved
                from the local HF cache (offline) or the Hub (online).
            name: the registry name; default the folder or repository name.
            revision: a Hub branch, tag or commit.
            convert_bin: read a pickle ``.bin`` checkpoint with ``weights_only`` loading.
            progress: show a progress bar on stderr.
            origin: where the import record says the checkpoint came from, when
                ``source`` is a copy of it (a server names the uploader's folder, as
                ``upload:HOST:PATH``); default ``source``'s resolved path or ``hf://ORG/NAME``.

        Returns:
            The :class:`~zoo.db.entities.ArtifactInfo`; importing the same content again
            returns the same record and stores nothing new.

        Example:
            >>> reg = zoo.connect()                          # doctest: +SKIP
            >>> reg.import_checkpoint("./bert-tiny").name    # doctest: +SKIP
            'bert-tiny'
        """
        from zoo.api.catalog import import_checkpoint

        check_flags(convert_bin=convert_bin)

        return import_checkpoint(
            self,
            source,
            name=name,
            revision=revision,
            convert_bin=convert_bin,
            progress=progress,
            origin=origin,
        )

    def import_checkpoints(
        self, sources, *, convert_bin: bool = False, batch: int = 200, progress: bool = False
    ):
        """Register many checkpoints at once: ``batch`` of them per write transaction,
        their tensor rows inserted together (each is what :meth:`import_checkpoint` of it
        would register).

        Returns:
            One :class:`~zoo.db.entities.ArtifactInfo` per source, in order.
        """
        from zoo.api.catalog import import_checkpoints

        check_flags(convert_bin=convert_bin)

        return import_checkpoints(
            self, sources, convert_bin=convert_bin, batch=batch, progress=progress
        )

    def list(
        self,
        *,
        kind: str | None = None,
        family: str | None = None,
        include_deleted: bool = False,
        **filters,
    ):
        """Every registered artifact that matches, oldest first, as
        :class:`~zoo.db.entities.ArtifactSummary` (no config, recipe or tensor rows:
        :meth:`show` has those). ``filters``: any of :meth:`search`'s."""
        from zoo.api.catalog import list_artifacts

        check_flags(include_deleted=include_deleted)

        return list_artifacts(
            self, kind=kind, family=family, include_deleted=include_deleted, **filters
        )

    def search(
        self,
        *,
        kind: str | None = None,
        family: str | None = None,
        include_deleted: bool = False,
        name: str | None = None,
        min_layers: int | None = None,
        max_layers: int | None = None,
        min_hidden: int | None = None,
        max_hidden: int | None = None,
        derived_from: str | None = None,
        created_by: str | None = None,
        created_after=None,
        created_before=None,
        limit: int | None = 50,
        after: str | None = None,
        newest_first: bool = True,
    ):
        """One page of the artifacts that match, newest first, read from their rows only.

        Args:
            kind, family: keep one kind (source, learngene, derived, placeholder) or
                family.
            include_deleted: keep removed artifacts too.
            name: a glob over names and aliases (``*``, ``?``; case-insensitive); text
                without a wildcard matches names and aliases that contain it.
            min_layers, max_layers, min_hidden, max_hidden: size range (inclusive).
            derived_from: keep the descendants (any depth) of this name, alias or hash.
            created_by: keep what this user registered.
            created_after, created_before: datetimes or ISO 8601 strings (UTC unless
                they say otherwise); after is inclusive, before exclusive.
            limit: the page size (None: every match in one page).
            after: the ``next`` cursor of the previous page (None, as a last page's
                ``next`` is, gives the first page: stop when ``next`` is None).
            newest_first: False lists oldest first.

        Returns:
            A :class:`~zoo.db.entities.Page`: ``items``, ``total`` (every match), ``next``.

        Example:
            >>> page = reg.search(family="bert", max_layers=6)       # doctest: +SKIP
            >>> more = reg.search(family="bert", max_layers=6, after=page.next)  # doctest: +SKIP
        """
        from zoo.api.catalog import search

        check_flags(include_deleted=include_deleted, newest_first=newest_first)

        return search(
            self,
            kind=kind,
            family=family,
            include_deleted=include_deleted,
            name=name,
            min_layers=min_layers,
            max_layers=max_layers,
            min_hidden=min_hidden,
            max_hidden=max_hidden,
            derived_from=derived_from,
            created_by=created_by,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            after=after,
            newest_first=newest_first,
        )

    def show(self, name: str, *, include_deleted: bool = False):
        """The artifact an alias, name, content-hash prefix (8+ hex digits) or Hub
        repository id (``ORG/NAME``: what was imported from it) names; with
        ``include_deleted``, also one removed with :meth:`rm` that :meth:`gc` has not
        forgotten yet (its ``deleted`` is true).

        Returns:
            Its :class:`~zoo.db.entities.ArtifactInfo`, with tensors, files and imports.

        Raises:
            NotFoundError: nothing has that name, or what has it was removed (and
                ``include_deleted`` is off).
            AmbiguousNameError: a hash prefix that several artifacts share.
        """
        from zoo.api.catalog import show

        check_flags(include_deleted=include_deleted)

        return show(self, name, include_deleted=include_deleted)

    def tag(self, name: str, alias: str):
        """Point ``alias`` at the artifact ``name``; the alias's history keeps where it
        pointed before (:meth:`alias_history`). Returns the artifact's
        :class:`~zoo.db.entities.ArtifactInfo`."""
        return self.point_alias(name, alias)[0]

    def point_alias(self, name: str, alias: str):
        """:meth:`tag`, returning ``(artifact, previous)``: the artifact's
        :class:`~zoo.db.entities.ArtifactInfo` and the name ``alias`` held just before
        (None for a new alias; ``name``'s own when it pointed there already), read in
        the same transaction, so tags of one alias at once each say what they moved."""
        from zoo.api.catalog import tag

        return tag(self, name, alias)

    def alias_history(self, alias: str, *, limit: int | None = None, after: str | None = None):
        """Where ``alias`` has pointed, newest first: one
        :class:`~zoo.db.entities.AliasSetting` (the artifact's name, kind and content hash,
        when and by whom) per time it was set or moved. It outlives the artifacts named.

        Args:
            limit: the page size (None: every setting, in one page).
            after: the ``next`` cursor of the previous page (None gives the newest
                settings: stop when ``next`` is None).

        Returns:
            An :class:`~zoo.db.entities.AliasHistoryPage`: a list of the settings, with
            ``next``.

        Raises:
            NotFoundError: no alias of that name was ever set.
            InvalidInputError: a limit under 1, or a cursor no page gave.

        Example:
            >>> [s.artifact_name for s in reg.alias_history("prod")]   # doctest: +SKIP
            ['bert-l6-h384-ws-1a2b3c4d', 'bert-base']
            >>> page = reg.alias_history("prod", limit=50)              # doctest: +SKIP
            >>> older = reg.alias_history("prod", limit=50, after=page.next)  # doctest: +SKIP
        """
        from zoo.api.catalog import alias_history

        return alias_history(self, alias, limit=limit, after=after)

    # --- maintenance of a shared registry (zoo.api.maintenance) ----------------------

    def rm(self, name: str, *, cascade: bool = False):
        """Remove an artifact: a soft delete that ``gc`` later makes final.

        Args:
            name: an alias, registry name or content-hash prefix.
            cascade: also remove every kept artifact zoo made from it (extracted
                learngenes, materialized checkpoints), down those edges. A checkpoint
                declared as made from it (:meth:`link`, a model card's ``base_model``)
                is never removed with it: it stays, and its lineage shows ``name`` as a
                removed parent.

        Returns:
            The removed artifacts (:class:`~zoo.db.entities.ArtifactInfo`), ``name``'s first.

        Raises:
            ConflictError: something zoo made from it is still kept and ``cascade`` is off.

        Example:
            >>> [i.name for i in reg.rm("bert-tiny", cascade=True)]   # doctest: +SKIP
            ['bert-tiny', 'bert-tiny-dwt-haar-1a2b3c4d']
        """
        from zoo.api.maintenance import rm

        check_flags(cascade=cascade)

        return rm(self, name, cascade=cascade)

    def gc(self, *, grace: str | float = "24h", dry_run: bool = False):
        """Collect garbage: sweep blobs nothing kept needs, then forget removed rows.

        A blob is kept while a kept stored artifact holds it, while a kept virtual
        artifact needs it to be re-derived (its ancestors' tensors, even removed ones),
        or while a kept artifact takes it as a side file from an ancestor (a base model
        saved on its own, its removed task model's tokenizer and card). Other blobs are
        swept once older than ``grace``; removed rows that no kept artifact descends from
        are then deleted for good.

        Args:
            grace: minimum blob age before a sweep, e.g. ``"24h"`` or seconds. Writers
                refresh blobs they reuse, so anything above an hour is safe while others
                write; ``0`` is only safe when nobody else is writing.
            dry_run: report what would go, change nothing.

        Returns:
            A :class:`~zoo.api.reports.GcReport`.
        """
        from zoo.api.maintenance import gc

        check_flags(dry_run=dry_run)

        return gc(self, grace=grace, dry_run=dry_run)

    def fsck(self, *, repair: bool = False, grace: str | float = "24h"):
        """Check the database against the store.

        Reports kept rows whose blobs are missing or the wrong size (``report.ok`` is
        False), temporary files and unfinished uploads left by killed writers, and orphan
        blobs no row points at. ``repair`` removes only leftovers and orphans older than
        ``grace``, never anything a row references.

        Returns:
            A :class:`~zoo.api.reports.FsckReport`.
        """
        from zoo.api.maintenance import fsck

        check_flags(repair=repair)

        return fsck(self, repair=repair, grace=grace)

    def verify(self, name: str | None = None, *, repair: bool = False):
        """Re-hash stored blobs: all of them, or those one artifact needs.

        For a virtual artifact, the blobs it is re-derived from are checked; for any
        artifact, the side files it takes from an ancestor too (a base model saved on its
        own, its task model's tokenizer and card). Each damaged blob's ``fix`` says what
        restores it; ``repair`` restores those zoo can produce again (a learngene's,
        extracted again; a stored derived checkpoint's, re-derived; a source's, or a side
        file's, read again from the folder it was imported from).

        Returns:
            A :class:`~zoo.api.reports.VerifyReport`; ``report.ok`` is False when a
            blob is still missing or its bytes no longer hash to its name.
        """
        from zoo.api.maintenance import verify

        check_flags(repair=repair)

        return verify(self, name, repair=repair)

    def release_claim(self, registry_id: str, *, retired: bool = False):
        """Release the claim of registry ``registry_id`` (or a prefix of its id) on this
        registry's store once the database it names is gone: another registry's claim is
        removed, so this registry's gc may sweep; this registry's own, held by the file it
        was copied or moved from, is handed over to this database. ``retired``: a person's
        word that a database zoo cannot look for (on another host, or named nowhere) is
        retired for good. Returns a :class:`~zoo.api.store_claim.ClaimRelease`."""
        return store_claim.release(self, registry_id, retired=retired)

    def db_upgrade(
        self, revision: str = "head", *, on_wait: Callable[[str], None] | None = None
    ) -> tuple[str | None, str | None]:
        """Upgrade the database schema; returns (before, after) revisions.

        On PostgreSQL a change waits for the sessions using the tables it alters in short
        tries, letting the registry's other work through between them; ``on_wait`` is
        told, in a line, which sessions it waits for."""
        db_engine.check_writable(self.engine)  # a read-only registry: one line, exit 11
        db_engine.check_reachable(self.engine)
        return db_engine.upgrade(self.engine, revision, on_wait=on_wait)

    def db_downgrade(
        self,
        revision: str,
        *,
        drop_data: bool = False,
        drop_everything: bool = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> tuple[str | None, str | None]:
        """Downgrade the database schema; returns (before, after) revisions.

        A downgrade that would delete recorded data (``base``: every artifact; below 0004:
        the API tokens; below 0005: the records of stored side files...) is rolled back
        and refused, naming what it would delete, unless ``drop_data`` (also spelled
        ``drop_everything``). ``on_wait``: as :meth:`db_upgrade`'s.
        """
        db_engine.check_writable(self.engine)  # a read-only registry: one line, exit 11
        db_engine.check_reachable(self.engine)
        return db_engine.downgrade(
            self.engine, revision, drop_data=drop_data or drop_everything, on_wait=on_wait
        )

    def db_current(self) -> dict[str, str | None]:
        """The database's schema revision, the one this zoo needs, and what the first is
        to this zoo (``state``: up to date, out of date, newer than this zoo, empty, or
        not a zoo registry)."""
        db_engine.check_reachable(self.engine)
        with self.engine.connect() as connection:
            current = db_engine.current_revision(connection)
            state = db_engine.schema_state(connection)
        return {"current": current, "head": db_engine.head_revision(), "state": state}

    # --- learngenes, materialization, lineage, audit --------------------------------------

    def extract(
        self,
        source: str,
        *,
        method: str = "dwt",
        wavelet: str | None = None,
        levels: int | None = None,
        keep: float | None = None,
        name: str | None = None,
        device: str | None = None,
        order: str = "stored",
    ):
        """Extract a learngene from a registered checkpoint, once.

        Args:
            source: the checkpoint's name, alias or hash prefix.
            method: ``dwt`` (BoT: approximation bands at levels 1..``levels`` over every
                changeable axis) or ``dct`` (FRONT: the low-frequency block, ``keep``
                ratio per axis, with per-layer statistics).
            wavelet: any discrete wavelet PyWavelets knows (``dwt``; default db2).
            levels: decomposition levels to store (``dwt``; default 2).
            keep: kept fraction per axis (``dct``; default 0.5).
            order: ``stored`` (units as the checkpoint has them), ``similar`` (units
                chained by similarity before the transform; the function is unchanged;
                see :mod:`zoo.unit_order`) or ``dissimilar`` (the reverse chain).
            name: the learngene's registry name when it is new (default: derived from the
                source and the settings); for one extracted before, an alias of it.
            device: where the transform runs (default: $ZOO_DEVICE, else the CPU).

        Returns:
            The learngene's :class:`~zoo.db.entities.ArtifactInfo`; the same request
            returns the same learngene.
        """
        from zoo.api.learngenes import extract

        return extract(
            self,
            source,
            method=method,
            wavelet=wavelet,
            levels=levels,
            keep=keep,
            name=name,
            device=device,
            order=order,
        )

    def materialize(
        self,
        name: str,
        *,
        layers: int,
        hidden: int,
        heads: int | None = None,
        intermediate: int | None = None,
        kv_heads: int | None = None,
        method: str | None = None,
        wavelet: str | None = None,
        rescale: str | None = None,
        seed: int | None = None,
        norm: str | None = None,
        depth: str | None = None,
        order: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        out=None,
        force: bool = False,
        max_shard_size: int | str | None = None,
        store: bool = False,
        return_weights: bool = True,
    ):
        """Materialize a model of the requested size.

        Args:
            name: a learngene, a source, an alias, or a family name (its default learngene).
            layers, hidden, heads, intermediate, kv_heads: the target size; omitted ones
                keep head_dim and the source's intermediate/hidden ratio, and kv_heads the
                source's query heads per kv head (more where the heads do not allow it).
            method: dwt, dct, weight-selection, hypercloning, net2net or scratch.
            method, wavelet, rescale: omitted ones take the learngene's settings, then
                zoo's measured defaults for the family and direction (``zoo.defaults``).
            rescale: amplitude rule for dwt/dct: none (raw, as the papers), std, fan
                fan-sqrt or exact (see :class:`zoo.derive.Recipe`).
            seed: seeds the methods that draw random numbers (scratch, net2net;
                default 0); refused for the others, which it would not change.
            norm: ``method`` (norm layers resized like the rest) or ``match`` (every
                method's norm layers keep the source's mean and spread).
            depth: for a deeper target, ``method`` (the method resizes the layer axis) or
                ``identity`` (each source layer followed by copies that start as
                identities); default: zoo's measured default. See :class:`zoo.derive.Recipe`.
            order: the unit order the method sees, ``stored``, ``similar`` or
                ``dissimilar`` (:mod:`zoo.unit_order`); from a learngene, the order it was
                extracted in.
            dtype: ``auto`` (each tensor keeps its source dtype), float32, bfloat16 or
                float16 for the floating-point tensors.
            device: ``cpu`` or ``cuda``; the transforms run there.
            out: write an HF folder there, streamed group by group (the whole target is
                never in memory); refused if not empty, and with ``force`` replaces only
                a previous output of zoo's.
            max_shard_size: bytes per weights file in ``out`` (e.g. ``"5GB"``, the
                default; several files get an index, as ``save_pretrained`` writes).
            store: keep the weights in the registry (default: recipe only, re-derivable).
            return_weights: False: each tensor is hashed (and stored) and let go, as
                with ``out``, so a target larger than memory is recorded; the state dict
                is then None. The CLI asks for this (it prints the record).

        Returns:
            :class:`~zoo.api.materialize.Materialized` with the state dict (on ``device``;
            ``None`` when written to ``out`` or not asked for), the config, and the
            recorded derived checkpoint.

        Example:
            >>> m = reg.materialize("bert", layers=6, hidden=384)   # doctest: +SKIP
            >>> m.config["num_hidden_layers"]                      # doctest: +SKIP
            6
        """
        from zoo.api.materialize import materialize
        from zoo.api.plan import MaterializeRequest

        check_flags(force=force, store=store, return_weights=return_weights)

        request = MaterializeRequest(
            layers=layers,
            hidden=hidden,
            heads=heads,
            intermediate=intermediate,
            kv_heads=kv_heads,
            method=method,
            wavelet=wavelet,
            rescale=rescale,
            seed=seed,
            norm=norm,
            depth=depth,
            order=order,
            dtype=dtype,
            device=device,
            out=out,
            force=force,
            max_shard_size=max_shard_size,
            store=store,
            return_weights=return_weights,
        )
        return materialize(self, name, request)

    def rederive(
        self,
        name: str,
        *,
        out=None,
        force: bool = False,
        device: str | None = None,
        max_shard_size: int | str | None = None,
        return_weights: bool = True,
    ):
        """Re-derive a derived checkpoint from its recipe and verify it bit for bit (with
        ``out``, every tensor as it is written: the folder appears only if all match).

        Args:
            return_weights: False: each tensor is hashed, checked and let go, so a
                checkpoint larger than memory is verified in what one layer takes.

        Returns:
            A :class:`~zoo.api.materialize.Materialized` (weights in memory without
            ``out``, unless ``return_weights`` is False).

        Raises:
            VerificationError: the re-derived tensors differ from the recorded ones.
        """
        from zoo.api.materialize import rederive

        check_flags(force=force, return_weights=return_weights)

        return rederive(
            self,
            name,
            out=out,
            force=force,
            device=device,
            max_shard_size=max_shard_size,
            return_weights=return_weights,
        )

    def family_default(self, family: str):
        """The learngene's :class:`~zoo.db.entities.ArtifactInfo` that
        ``materialize(family, ...)`` uses by :meth:`set_default`, or None where none is set
        (or it was removed)."""
        from zoo.api.materialize import family_default

        return family_default(self, family)

    def set_default(self, family: str, name: str):
        """Make the learngene ``name`` what ``materialize(family, ...)`` uses, also where
        an artifact is named ``family``; returns the learngene's
        :class:`~zoo.db.entities.ArtifactInfo`."""
        from zoo.api.materialize import set_default

        return set_default(self, family, name)

    def lineage(
        self,
        name: str,
        *,
        up: bool = True,
        down: bool = True,
        depth: int | None = None,
        include_deleted: bool = False,
    ):
        """Ancestors and/or descendants of an artifact, with each edge's recipe, at most
        ``depth`` edges away (None: all); a :class:`~zoo.api.lineage.Lineage` (``to_text``,
        ``to_dot``, ``to_mermaid``, ``to_json``). ``include_deleted``: ``name`` may be an
        artifact removed with :meth:`rm` and not yet forgotten by :meth:`gc` (removed
        ancestors and descendants of a kept one are always shown, marked)."""
        from zoo.api.lineage import lineage

        check_flags(up=up, down=down, include_deleted=include_deleted)

        return lineage(self, name, up=up, down=down, depth=depth, include_deleted=include_deleted)

    def link(self, child: str, parent: str, *, relation: str = "finetune", note: str | None = None):
        """Declare that ``child`` was made from ``parent`` outside zoo; returns the edge
        (:class:`~zoo.db.entities.EdgeInfo`). Refused when it would close a cycle."""
        from zoo.api.lineage import link

        return link(self, child, parent, relation=relation, note=note)

    def audit(self, path, *, verify: bool = False, convert_bin: bool = False):
        """Identify a checkpoint folder or .safetensors file by content, with ancestry;
        ``convert_bin``: read pickle weights as :meth:`import_checkpoint` does;
        ``verify``: re-derive a derived checkpoint it names and compare. Returns an
        :class:`~zoo.api.audit.AuditReport` (``status``: known, modified, removed or
        unknown)."""
        from zoo.api.audit import audit

        check_flags(verify=verify, convert_bin=convert_bin)

        return audit(self, path, verify=verify, convert_bin=convert_bin)

    # --- bearer tokens of `zoo serve` (zoo.api.tokens) ----------------------------------

    def create_token(self, name: str, *, role: str = "read", expires=None):
        """A new bearer token with ``role`` (read, write or admin), valid until
        ``expires``: a duration (``"30d"``, ``"12h"``), an ISO date or time
        (``"2027-01-31"``: 00:00 UTC), a datetime or a timedelta; None: until revoked.

        Returns:
            ``(TokenInfo, secret)``: the secret is not stored and cannot be shown again.
        """
        from zoo.api.tokens import create_token

        return create_token(self, name, role, expires)

    def revoke_token(self, name: str):
        """Revoke the active token named ``name``; returns the revoked records."""
        from zoo.api.tokens import revoke_token

        return revoke_token(self, name)

    def list_tokens(self, *, include_revoked: bool = False):
        """Token records (never secrets), oldest first."""
        from zoo.api.tokens import list_tokens

        check_flags(include_revoked=include_revoked)

        return list_tokens(self, include_revoked=include_revoked)

    def check_token(self, secret: str):
        """The active :class:`~zoo.api.tokens.TokenInfo` a secret belongs to, or None;
        an expired token is refused (AuthenticationError), saying when it expired."""
        from zoo.api.tokens import check_token

        return check_token(self, secret)

    def active_token(self, token_id: int):
        """The :class:`~zoo.api.tokens.TokenInfo` with id ``token_id`` while it is active,
        or None."""
        from zoo.api.tokens import active_token

        return active_token(self, token_id)

    def export(self, name: str, *, out, force: bool = False, max_shard_size=None):
        """Write a source or derived checkpoint as a Hugging Face folder (config.json,
        weights, README.md), all or nothing and streamed; a virtual one is re-derived and
        verified as it is written. Returns the folder."""
        from zoo.api.materialize import export

        check_flags(force=force)

        return export(self, name, out, force=force, max_shard_size=max_shard_size)

    def audit_manifest(self, label: str, tensors, config=None, metadata=None, *, verify=False):
        """Like :meth:`audit`, from the tensors' records (name, dtype, shape, nbytes,
        digest) a client hashed itself; ``label`` names the file in the report."""
        from zoo.api.audit import audit_manifest

        return audit_manifest(self, label, tensors, config, metadata, verify=verify)
