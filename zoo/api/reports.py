"""What the maintenance commands (gc, fsck, verify) report: plain records, apart from the
code that makes them, so that a client of a zoo server rebuilds them from the server's
JSON without importing the database layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class BlobProblem:
    """A blob that kept rows need but that is missing, damaged or the wrong size, or
    that verify could not read."""

    digest: str
    problem: str  # missing | corrupt | wrong-size | not a file | unreadable
    artifacts: tuple[str, ...] = ()
    detail: str = ""
    fix: str = ""  # what restores it (see zoo.api.repair)


@dataclass(frozen=True)
class StoreItem:
    """A blob or leftover file in the store: name, size and age in seconds."""

    name: str
    size: int
    age_s: float


@dataclass(frozen=True)
class FsckReport:
    """What ``zoo fsck`` found, and what ``--repair`` removed."""

    store_url: str
    checked_rows: int
    stored_blobs: int
    problems: tuple[BlobProblem, ...]
    temp_files: tuple[StoreItem, ...]
    orphans: tuple[StoreItem, ...]
    #: temporary or set-aside output folders (``--out``) that killed writers left
    output_leftovers: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    grace_s: float = 0.0
    repair: bool = False
    #: previous outputs a killed ``--force`` had set aside, put back in place (a subset of
    #: ``removed``'s count: handled, not deleted)
    restored: tuple[str, ...] = ()
    #: other registries (or blobs of unknown owners) using the store: the orphans may be
    #: theirs, and neither ``gc`` nor ``fsck --repair`` sweeps it
    shared_with: int = 0
    #: rows naming a row the database does not hold (``artifact_tensors`` naming a deleted
    #: artifact), one line per table and table it names, with the count
    dangling: tuple[str, ...] = ()
    #: orphans ``--repair`` moved into :attr:`quarantine` instead of deleting them: the
    #: file at the blob's name held bytes that do not hash to it, which zoo did not write
    quarantined: tuple[str, ...] = ()
    quarantine: str = ""

    @property
    def ok(self) -> bool:
        """No kept row points at a missing or damaged blob, and no row at a missing row
        (leftovers are harmless)."""
        return not self.problems and not self.dangling

    @property
    def left(self) -> int:
        """How many of the leftovers and orphans found are still there for a later
        ``--repair`` or ``zoo gc`` to clear (those younger than the grace period, after a
        repair); none on a store another registry uses, which neither sweeps."""
        if self.shared_with:
            return 0
        found = len(self.temp_files) + len(self.orphans) + len(self.output_leftovers)
        return found - len(self.removed) - len(self.restored) - len(self.quarantined)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "left": self.left}


@dataclass(frozen=True)
class GcReport:
    """What ``zoo gc`` swept (or would sweep, with ``dry_run``)."""

    dry_run: bool
    grace_s: float
    marked: int
    swept: tuple[StoreItem, ...]
    too_young: int
    hard_deleted: tuple[str, ...]  # every row forgotten, placeholders included
    kept_deleted: tuple[str, ...] = field(default=())
    #: The placeholders among ``hard_deleted``: no one removed them, but no model card's
    #: base_model edge uses them any more.
    unused_placeholders: tuple[str, ...] = field(default=())
    #: Unneeded blobs whose file held bytes that do not hash to its name: moved (with
    #: ``dry_run``, to be moved) into :attr:`quarantine`, never deleted; not in ``swept``.
    quarantined: tuple[StoreItem, ...] = field(default=())
    quarantine: str = ""

    @property
    def swept_bytes(self) -> int:
        return sum(b.size for b in self.swept)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "swept_bytes": self.swept_bytes}


@dataclass(frozen=True)
class VerifyReport:
    """What ``zoo verify`` re-hashed and what did not match."""

    checked: int
    checked_bytes: int
    problems: tuple[BlobProblem, ...]
    repaired: tuple[str, ...] = ()
    repair: bool = False
    #: the repaired blobs whose damaged bytes were moved into :attr:`quarantine` first
    quarantined: tuple[str, ...] = ()
    quarantine: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged(self) -> tuple[BlobProblem, ...]:
        """The problems that are damage (all but the blobs this user could not read)."""
        return tuple(p for p in self.problems if p.problem != "unreadable")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}
