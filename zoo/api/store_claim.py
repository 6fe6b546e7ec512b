"""Which SQLite file writes and sweeps a store under a registry's id.

A copy of a SQLite registry (a backup, a staging copy) carries the original's id; pointed
at the original's store, its sweep would take every blob the original wrote since the copy
for an orphan. So a registry's claim in the store records where its database file is: the
host, the path, and the file's identity there (device and inode). A `mv` on one file
system keeps the identity and a copy gets a new one, and SQLite writes its file in place,
so the owner is found wherever it has moved on its host, and a copy is never taken for it,
even once the original has moved away or been deleted: handing the claim over is a
person's step (emptying the claim), never a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from zoo.errors import ConflictError


@dataclass(frozen=True)
class Place:
    """Where a registry's SQLite file is: host, path, and its (device, inode) there;
    claims written as ``HOST:FILE`` (without identity) read with ``inode`` None."""

    host: str
    file: str
    device: int | None = None
    inode: int | None = None

    def text(self) -> str:
        """The claim's text: JSON, which no ``HOST:FILE`` claim starts like."""
        fields = {"host": self.host, "file": self.file}
        fields.update(device=self.device, inode=self.inode)
        return json.dumps(fields, sort_keys=True)


class UnreadableClaim(ValueError):
    """A claim's text is neither form zoo writes."""


def here(path: str | os.PathLike[str]) -> Place:
    """The place of the SQLite file at ``path`` (followed through links) on this host."""
    st = os.stat(path)
    return Place(socket.gethostname(), str(Path(path).resolve()), st.st_dev, st.st_ino)


def parse(text: str) -> Place:
    """A claim's recorded place (``text`` not empty)."""
    if not text.startswith("{"):
        host, sep, file = text.partition(":")
        if not sep or not host or not file:
            raise UnreadableClaim(text)
        return Place(host, file)
    try:
        fields = json.loads(text)
        place = Place(str(fields["host"]), str(fields["file"]), fields["device"], fields["inode"])
    except (ValueError, KeyError, TypeError):
        raise UnreadableClaim(text) from None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (place.device, place.inode)):
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
    handover = f"empty the file {claim} in the store and run again"
    try:
        there = parse(recorded)
    except UnreadableClaim:
        raise ConflictError(
            f"The store {store.url} holds a claim {claim} zoo cannot read, so {command or 'zoo'} "
            f"cannot tell which database writes and sweeps it; if this registry is the only "
            f"one with its id, {handover}."
        ) from None
    found = standing(there, this)
    if found is Standing.OWNER:
        return False
    if found is Standing.MOVED:
        return True
    if command is None:
        harm = "the original's gc would delete what this one writes there"
        run = "Write"
    else:
        harm = f"{command} here would delete the blobs the original wrote since the copy"
        run = f"Run {command}"
    if found is Standing.ANOTHER_HOST:
        if command is None and (there.file, there.inode) == (this.file, this.inode):
            return False
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {there.file} "
            f"on {there.host}, which carries this one's id: one is a copy of the other, and "
            f"{harm}. {run} from there; if the registry has moved to this machine for good, "
            f"{handover}."
        )
    if found is Standing.REPLACED:
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {there.file}, "
            f"and the file there now is another one carrying its id (a copy, or a backup "
            f"restored over it): {harm}. If that file is gone for good, {handover}."
        )
    if holds_registry(there.file, registry_id):
        raise ConflictError(
            f"The store {store.url} is written and swept by the registry in {there.file}, "
            f"and this one ({this.file}) carries its id: a copy of it sharing its store, "
            f"and {harm}. Give the copy a store of its own (ZOO_STORE_URL); if the original "
            f"is retired for good, {handover}."
        )
    raise ConflictError(
        f"The store {store.url} is written and swept by the registry that was in "
        f"{there.file}, and this one ({this.file}) is another file carrying its id: a copy, "
        f"and {harm}, wherever the original is now. {run} from the original; if it was "
        f"deleted for good, or this is it moved to another file system (a new file), {handover}."
    )
