"""Which SQLite file writes and sweeps a store under a registry's id.

A copy of a SQLite registry (a backup, a staging copy) carries the original's id; pointed
at the original's store, its sweep would take every blob the original wrote since the copy
for an orphan. So a registry's claim in the store records where its database file is: the
host, the path, and the file's identity there (device and inode). A `mv` on one file
system keeps the identity and a copy gets a new one, and SQLite writes its file in place,
so the owner is found wherever it has moved on its host, and a copy is never taken for it,
even once the original has moved away or been deleted: handing the claim over is a
person's step (`zoo release-claim`, :func:`release`), never a guess, and one that zoo
checks where it can look.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from zoo.errors import ConflictError, InvalidInputError, NotFoundError
from zoo.text import printable

QUOTED_CHARS = 200  # the most of a claim's recorded text a message quotes


@dataclass(frozen=True)
class Place:
    """Where a registry's SQLite file is: host, path, and its (device, inode) there;
    claims written as ``HOST:FILE`` (without identity) read with ``inode`` None. ``store``:
    where the store the claim is written in was, as the registry reached it (a folder's
    real path, or an object store's URL): a store copied with the database (`cp -a` of a
    whole home) carries a claim recording the original's store, not itself."""

    host: str
    file: str
    device: int | None = None
    inode: int | None = None
    store: str | None = None

    def text(self) -> str:
        """The claim's text: JSON, which no ``HOST:FILE`` claim starts like."""
        fields = {"host": self.host, "file": self.file}
        fields.update(device=self.device, inode=self.inode)
        if self.store is not None:
            fields["store"] = self.store
        return json.dumps(fields, sort_keys=True)


def quoted(text: str) -> str:
    """Text a claim records (a path, a host, an unreadable claim's content) as a message
    quotes it: escaped (:func:`zoo.text.printable`), so a newline in it prints no line of
    its own, and its first ``QUOTED_CHARS`` characters only, then ``...``."""
    return _cut(printable(text))


def _cut(text: str) -> str:
    """``text``'s first ``QUOTED_CHARS`` characters, then ``...`` where it is longer."""
    return text if len(text) <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]}..."


class UnreadableClaim(ValueError):
    """A claim's text is neither form zoo writes."""


def here(path: str | os.PathLike[str], store: str | None = None) -> Place:
    """The place of the SQLite file at ``path`` (followed through links) on this host,
    claiming the store at ``store`` (see :class:`Place`)."""
    st = os.stat(path)
    return Place(socket.gethostname(), str(Path(path).resolve()), st.st_dev, st.st_ino, store)


def parse(text: str) -> Place:
    """A claim's recorded place (``text`` not empty)."""
    if not text.startswith("{"):
        host, sep, file = text.partition(":")
        if not sep or not host or not file:
            raise UnreadableClaim(text)
        return Place(host, file)
    try:
        fields = json.loads(text)
        place = Place(
            str(fields["host"]),
            str(fields["file"]),
            fields["device"],
            fields["inode"],
            fields.get("store"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UnreadableClaim(text) from None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (place.device, place.inode)):
        raise UnreadableClaim(text)
    if place.store is not None and not isinstance(place.store, str):
        raise UnreadableClaim(text)
    return place


class Standing(Enum):
    """How a database file stands to a claim's recorded place."""

    OWNER = "owner"  # the claimed file, recorded as it is now
    MOVED = "moved"  # the claimed file, recorded at another path or without identity
    ANOTHER_HOST = "another host"  # claimed on another host: this one cannot look there
    REPLACED = "replaced"  # at the claimed path, but not the file that claimed
    OTHER = "other"  # another file: a copy, whether or not the claimed file is there


def standing(recorded: Place, this: Place) -> Standing:
    """Whether ``this`` file is the one ``recorded`` names (see the module's comment)."""
    if recorded.host != this.host:
        return Standing.ANOTHER_HOST
    if recorded.inode is not None and (recorded.device, recorded.inode) == (
        this.device,
        this.inode,
    ):
        return Standing.OWNER if recorded.file == this.file else Standing.MOVED
    if not _same_file(recorded.file, this.file):
        return Standing.OTHER
    if recorded.inode is None:
        return Standing.MOVED  # recorded without identity: this file, as the path says
    # The same inode on another device number: the file system was mounted again (device
    # numbers of network and mapped disks are given at mount time). Another inode: the
    # file was replaced (a backup restored over it by a rename), and the claimed file
    # may still be elsewhere.
    return Standing.MOVED if recorded.inode == this.inode else Standing.REPLACED


def holds_registry(path: str | os.PathLike[str], registry_id: str) -> bool:
    """Whether the SQLite file ``path`` is a zoo registry with this id (read-only)."""
    import sqlite3

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT id FROM registry_identity").fetchall()
    except sqlite3.Error:
        return False
    return found == [(registry_id,)]


def _same_store(a: str | None, b: str | None) -> bool:
    """Whether two stores' locations (:attr:`Place.store`) are one store: an object
    store's URL, or a folder, reached by any path."""
    if a is None or b is None:
        return False
    return a == b or ("://" not in a and "://" not in b and _same_file(a, b))


def _store_copied_from(there: Place, this: Place, registry_id: str) -> bool:
    """Whether the store whose claim records ``there`` (the registry carrying
    ``registry_id`` in ``there.file``, alive) is not the store that registry claimed but a
    copy of it (a home copied whole): the claim records another store, in a folder here,
    whose own claim names that registry's database, so that one writes and sweeps there,
    not here. An object store zoo does not open to look."""
    from zoo.store import open_store

    if there.store is None or "://" in there.store or _same_store(there.store, this.store):
        return False
    try:
        recorded = open_store(there.store).claim_place(registry_id)
        if not recorded or not Path(there.store).is_dir():
            return False
        return standing(parse(recorded), here(there.file)) in (Standing.OWNER, Standing.MOVED)
    except (OSError, UnreadableClaim):
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # not there (moved or deleted), or not reachable
        return False


def check(store, registry_id: str, recorded: str, this: Place, *, command: str | None) -> bool:
    """Whether the SQLite file at ``this`` may write to ``store`` under ``registry_id``, or
    sweep it with ``command`` (None: a write), by the store's claim ``recorded`` (not
    empty): True when it is the claimed file as the claim no longer records it (moved, or
    recorded without identity), whose place is then recorded anew; False when the claim
    stands as it is.

    A copy's writes are refused as its sweeps are: the claimed file's sweeps would take
    what the copy writes for orphans. A claim from another host that names this path and
    inode (one file on a file system both hosts mount) lets this host write; only the
    claiming host can look at its file, so only it sweeps.

    Raises:
        ConflictError: ``this`` is another file carrying the registry's id, or the claim
            cannot be read; the message says what the command would do and how to go on.
    """
    claim = f"{store.CLAIMS}/{registry_id}"
    handover = f"`reg.release_claim({registry_id!r})` hands the claim over to this one"
    unchecked = (
        f"`reg.release_claim({registry_id!r}, retired=True)` hands the claim over to this one"
    )
    try:
        there = parse(recorded)
    except UnreadableClaim:
        raise ConflictError(
            f"The store {store.url} holds a claim {claim} zoo cannot read, so {command or 'zoo'} "
            f"cannot tell which database writes and sweeps it; if this registry is the only "
            f"one with its id, {unchecked}."
        ) from None
    found = standing(there, this)
    if found is Standing.OWNER:  # recorded anew where the store has moved or was not said
        return there.store is None or not _same_store(there.store, this.store)
    if found is Standing.MOVED:
        return True
    if command is None:
        harm = "the original's gc would delete what this one writes there"
        run = "Write"
    else:
        harm = f"{command} here would delete the blobs the original wrote since the copy"
        run = f"Run {command}"
    file = quoted(there.file)
    if found is Standing.ANOTHER_HOST:
        if command is None and (there.file, there.inode) == (this.file, this.inode):
            return False
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {file} "
            f"on {quoted(there.host)}, which carries this one's id: one is a copy of the "
            f"other, and {harm}. {run} from there; if the registry has moved to this machine "
            f"for good, {unchecked}."
        )
    if found is Standing.REPLACED:
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {file}, "
            f"and the file there now is another one carrying its id (a copy, or a backup "
            f"restored over it, while the original may have been moved elsewhere): {harm}. "
            f"If the original no longer exists anywhere, {unchecked}."
        )
    if holds_registry(there.file, registry_id):
        if _store_copied_from(there, this, registry_id):
            raise ConflictError(
                f"The store {store.url} is a copy of the store {quoted(there.store)} of the "
                f"registry in {file} (its claim, copied with it, names that registry's "
                f"database), and this one ({this.file}) carries its id: a copy of it, with a "
                f"copy of its store. Nothing is written or swept here until {handover} (the "
                "original keeps the claim of its own store)."
            )
        sharing = " sharing its store" if _same_store(there.store, this.store) else ""
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {file}, "
            f"and this one ({this.file}) carries its id: a copy of it{sharing}, and {harm}. "
            f"Give the copy a store of its own (ZOO_STORE_URL); if the original is retired "
            f"for good, {handover} once it is gone from {file}."
        )
    raise ConflictError(
        f"The store {store.url} is written and swept by the registry that was in "
        f"{file}, and this one ({this.file}) is another file carrying its id: a copy, "
        f"and {harm}, wherever the original is now. {run} from the original; if it was "
        f"deleted for good, or this is it moved to another file system (a new file), {handover}."
    )


@dataclass(frozen=True)
class ClaimRelease:
    """What `zoo release-claim` did with a store's claim."""

    store_url: str
    registry_id: str
    named: str  # the database the claim named: FILE on this host, else HOST:FILE; "" none
    outcome: str  # removed | handed over | already this database's
    database: str = ""  # the database the claim names now (a hand-over's)

    def to_json(self) -> dict:
        return asdict(self)


def release(reg, query: str, *, retired: bool = False) -> ClaimRelease:
    """Release the claim of the registry ``query`` (its id, or a prefix of one) on
    ``reg``'s store once the database it names is gone: another registry's claim is
    removed (``reg``'s gc may then sweep that registry's blobs); ``reg``'s own, held by
    the file it was copied or moved from, is handed over to ``reg``'s database.

    Gone means, on this host, that no database with that registry's id is at the claim's
    path: a file moved on its file system is not searched for (it records where it is at
    its next write), so running this is a person's word that it was deleted, as the
    refusals that name this step say. Where zoo cannot look (a claim from another host,
    one that names no database or cannot be read), ``retired`` is that word; and where
    ``reg``'s own database is at the claim's path but is not the file that claimed (a
    backup restored there, a copy put there), since the claimed file may have been moved
    elsewhere and still be in use: the two cannot be told apart from here, and ``reg``'s
    gc would sweep every blob the moved one wrote since the copy.

    Raises:
        NotFoundError: the store holds no such claim.
        ConflictError: the database the claim names is there, or zoo cannot look, or it
            may have been moved away from the claim's path (another file there now, this
            one), and ``retired`` is not given.
    """
    store = reg.store
    registry_id = _claimed_id(store, query, own=reg.registry_id)
    own = registry_id == reg.registry_id
    here = reg._place()
    if own and here is None:
        raise InvalidInputError(
            "This registry's database is PostgreSQL, whose claim names no database file: "
            "there is nothing to hand over (docs/operations.md says what to keep apart)."
        )
    recorded = store.claim_place(registry_id)
    if recorded is None:
        raise NotFoundError(f"The store {store.url} holds no claim of registry {registry_id}.")

    def done(outcome: str, named: str = "") -> ClaimRelease:
        if not own:
            store.remove_claim(registry_id)
        elif recorded != here.text():  # handed over, or this file moved
            store.set_claim_place(registry_id, here.text())
        return ClaimRelease(store.url, registry_id, named, outcome, here.file if own else "")

    taken = "handed over" if own else "removed"
    if not recorded:  # a PostgreSQL registry's, or emptied by hand to hand it over
        if not (own or retired):
            raise _unchecked(store, registry_id, "names no database (a PostgreSQL registry's)")
        return done(taken)
    try:
        there = parse(recorded)
    except UnreadableClaim:
        there = None
    if there is None:
        if not retired:
            raise _unchecked(store, registry_id, "cannot be read (a newer zoo's, or edited)")
        return done(taken, _cut(recorded))
    this_host = socket.gethostname()
    named = there.file if there.host == this_host else f"{there.host}:{there.file}"
    found = standing(there, here) if own else None
    if found in (Standing.OWNER, Standing.MOVED):
        return done("already this database's", named)
    if there.host != this_host:
        if not retired:
            raise _unchecked(store, registry_id, f"names the registry in {quoted(named)}")
        return done(taken, named)
    if found is Standing.REPLACED and not retired:
        # This file is at the claim's path, but the claimed file (another inode) may be
        # alive elsewhere, moved there: a backup restored at its old path looks the same.
        raise ConflictError(
            f"The claim of registry {registry_id} on the store {store.url} names the "
            f"database in {quoted(there.file)} (device {there.device}, inode {there.inode}), "
            f"and the file there now is this one, another (inode {here.inode}) carrying its "
            "id: a backup restored or a copy put there, while the claimed database may have "
            "been moved elsewhere, and gc here would sweep every blob it wrote since the "
            f"copy. If it no longer exists anywhere, `reg.release_claim({registry_id!r}, "
            "retired=True)` hands the claim over to this one."
        )
    if own and _store_copied_from(there, here, registry_id):
        return done(taken, named)  # the original writes and sweeps a store of its own
    if holds_registry(there.file, registry_id) and not (own and _same_file(there.file, here.file)):
        keep_apart = "this copy" if own else "each registry"
        raise ConflictError(
            f"The registry {registry_id} in {quoted(there.file)} is there, carrying the id its "
            f"claim on the store {store.url} names, so the claim stands. Give {keep_apart} a "
            "store of its own (ZOO_STORE_URL)."
        )
    return done(taken, named)


def _claimed_id(store, query: str, *, own: str) -> str:
    """The registry id of the store's claims that ``query`` (an id, or a prefix) names."""
    wanted = query.strip().lower()
    if not wanted:
        raise InvalidInputError("Name the registry whose claim to release: its id, or a prefix.")
    found = [c for c in store.claims() if c != store.UNCLAIMED and c.startswith(wanted)]
    if len(found) > 1:
        raise InvalidInputError(
            f"{query!r} begins the ids of {len(found)} registries claiming the store "
            f"{store.url} ({', '.join(found)}); give more of the id."
        )
    if not found:
        mine = " (this registry's: its next write or sweep records it)" if wanted == own else ""
        raise NotFoundError(
            f"The store {store.url} holds no claim of a registry {query}{mine}; `reg.gc()` "
            "names the registries whose claims refuse it."
        )
    return found[0]


def _unchecked(store, registry_id: str, what: str) -> ConflictError:
    return ConflictError(
        f"The claim of registry {registry_id} on the store {store.url} {what}: zoo cannot "
        "look whether that database is gone. If it is retired for good, run again with "
        "retired=True.",
        params=["retired"],
    )
