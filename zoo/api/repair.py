"""Restoring missing or damaged blobs from what zoo can compute or read again.

A blob is content: any process that produces the same bytes may put them back. zoo can
produce them again for three kinds of holder:

- a learngene: extracted again from its source (the extraction is deterministic);
- a stored derived checkpoint: re-derived from its recipe and verified bit for bit;
- a source: read again from the folder it was imported from, if that folder is on this
  machine and still holds the same tensor.

Anything else (a source imported from the Hub, or whose folder changed) needs the
checkpoint itself: ``zoo import`` of the original puts missing blobs back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import null, select, union_all
from sqlalchemy.orm import Session

from zoo.db import queries
from zoo.db.models import Artifact, ArtifactFile, ArtifactTensor, ImportRecord
from zoo.errors import ZooError

_CHUNK = 500


@dataclass(frozen=True)
class Holder:
    """A kept artifact whose stored tensors include a damaged blob, and how zoo can
    produce that blob again (``how``: recompute, rederive, reread, or "" when it cannot)."""

    artifact_id: int
    name: str
    kind: str
    how: str
    origin: str = ""
    # Made from another holder of the same blob that zoo cannot restore: extracting or
    # deriving it again would read the very blob that is damaged.
    blocked: bool = False
    # The side file (a card, a tokenizer file) the blob was, which the source's folder
    # holds changed since the import: the folder cannot give the blob back.
    changed: str = ""
    # The kept artifact that takes this side file from the holder, its ancestor (a base
    # model saved alone, from its task model): the one that needs it, the holder being
    # the one zoo restores it from, kept or removed.
    heir: str = ""

    @property
    def needed_by(self) -> str:
        """The kept artifact that needs the blob."""
        return self.heir or self.name


def holders(session: Session, digests) -> dict[str, list[Holder]]:
    """digest -> the kept, stored artifacts holding it, the owners of the side files kept
    artifacts take from an ancestor, and the removed ancestors kept artifacts are derived
    again from (those two on each heir's behalf), those zoo can repair from first."""
    digests = sorted(set(digests))
    found: dict[str, list[Holder]] = {}
    for start in range(0, len(digests), _CHUNK):
        refs = union_all(
            select(ArtifactTensor.artifact_id, ArtifactTensor.digest, null().label("file")),
            select(ArtifactFile.artifact_id, ArtifactFile.digest, ArtifactFile.name),
        ).subquery("refs")
        rows = session.execute(
            select(refs.c.digest, Artifact, refs.c.file)
            .join(Artifact, Artifact.id == refs.c.artifact_id)
            .where(
                refs.c.digest.in_(digests[start : start + _CHUNK]),
                Artifact.deleted_at.is_(None),
                Artifact.virtual.is_(False),
            )
            .order_by(Artifact.id)
        ).all()
        # A blob thousands of sources share (hard-linked copies, one base model under
        # many configs): their imports in one query a few hundred at a time, not one each.
        origins = _origins(session, sorted({row.id for _, row, _ in rows if row.kind == "source"}))
        files = {(digest, row.id): file for digest, row, file in rows if file is not None}
        seen: set[tuple[str, int]] = set()
        for digest, row, _ in rows:
            if (digest, row.id) in seen:  # a tensor and a file alike
                continue
            seen.add((digest, row.id))
            holder = _holder(session, row, origins.get(row.id, []))
            holder = _unless_file_changed(holder, digest, files.get((digest, row.id)))
            found.setdefault(digest, []).append(holder)
    for digest, heir in [*_heirs(session, digests), *_removed_input_heirs(session, digests)]:
        found.setdefault(digest, []).append(heir)
    return {d: sorted(_blocked(session, h), key=lambda h: _ORDER[h.how]) for d, h in found.items()}


def _heirs(session: Session, digests: list[str]) -> list[tuple[str, Holder]]:
    """(digest, holder) for each kept artifact taking one of ``digests`` as a side file
    from an ancestor: its owner's holder, which restores it, on the heir's behalf."""
    from .side_files import inherited_files

    wanted = set(digests)
    kept = session.scalars(select(Artifact.id).where(Artifact.deleted_at.is_(None))).all()
    found = []
    for heir, inherited in inherited_files(session, kept).items():
        for f in inherited.files:
            if f.digest in wanted:
                owner = _holder(session, session.get(Artifact, inherited.owner))
                heir_name = session.get(Artifact, heir).name
                owner = _unless_changed(session, owner, f.digest)
                found.append((f.digest, dataclasses.replace(owner, heir=heir_name)))
    return found


def _removed_input_heirs(session: Session, digests: list[str]) -> list[tuple[str, Holder]]:
    """(digest, holder) for each kept artifact derived again from a removed ancestor
    holding one of ``digests``: the ancestor's holder, on the heir's behalf. A removed
    derived checkpoint is not re-derived (`zoo rederive` takes kept ones only)."""
    from .maintenance import removed_input_heirs

    found = []
    for digest, ancestor, heir in removed_input_heirs(session, digests):
        row = session.get(Artifact, ancestor)
        owner = (
            _holder(session, row)
            if row.kind != "derived"
            else Holder(row.id, row.name, row.kind, "")
        )
        owner = _unless_changed(session, owner, digest)
        found.append((digest, dataclasses.replace(owner, heir=session.get(Artifact, heir).name)))
    return found


def _unless_changed(session: Session, h: Holder, digest: str) -> Holder:
    """``h``, unable to read ``digest`` again when it is a side file its folder holds
    changed (side files are small: hashed here; a tensor is checked by the repair)."""
    if h.how != "reread":
        return h
    name = session.scalars(
        select(ArtifactFile.name).where(
            ArtifactFile.artifact_id == h.artifact_id, ArtifactFile.digest == digest
        )
    ).first()
    return _unless_file_changed(h, digest, name)


def _unless_file_changed(h: Holder, digest: str, name: str | None) -> Holder:
    """:func:`_unless_changed` where the side file ``digest`` is in ``h`` is known:
    ``name``, or None for a tensor."""
    import hashlib

    if h.how != "reread" or name is None:
        return h
    try:
        same = hashlib.sha256((Path(h.origin) / name).read_bytes()).hexdigest() == digest
    except OSError:
        same = False
    return h if same else dataclasses.replace(h, how="", changed=name)


def _blocked(session: Session, held: list[Holder]) -> list[Holder]:
    """``held``, the learngenes and derived checkpoints made from another holder of the
    same blob that zoo cannot restore marked ``blocked`` (a weight-selection size shares
    its source's tensors: with the source's folder gone, re-deriving cannot help)."""
    from zoo.db.graph import is_ancestor

    lost = [h for h in held if not h.how]
    return [
        dataclasses.replace(h, blocked=True)
        if h.how in ("recompute", "rederive")
        and any(is_ancestor(session, x.artifact_id, h.artifact_id) for x in lost)
        else h
        for h in held
    ]


def _able(held: list[Holder]) -> list[Holder]:
    """The holders a repair may restore the blob from."""
    return [h for h in held if not h.blocked]


# Sources first (a learngene is extracted again from its source's blobs), then learngenes
# (a stored derived checkpoint is re-derived from them).
_ORDER = {"reread": 0, "recompute": 1, "rederive": 2, "": 3}


def _origins(session: Session, artifact_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """artifact id -> its imports' (origin, revision), oldest first."""
    out: dict[int, list[tuple[str, str]]] = {}
    for start in range(0, len(artifact_ids), _CHUNK):
        for artifact_id, origin, revision in session.execute(
            select(ImportRecord.artifact_id, ImportRecord.origin, ImportRecord.revision)
            .where(ImportRecord.artifact_id.in_(artifact_ids[start : start + _CHUNK]))
            .order_by(ImportRecord.artifact_id, ImportRecord.id)
        ):
            out.setdefault(artifact_id, []).append((origin, revision))
    return out


def _holder(
    session: Session, row: Artifact, origins: list[tuple[str, str]] | None = None
) -> Holder:
    """How zoo can produce ``row``'s blobs again; ``origins``: a source's imports as
    :func:`_origins` gives them, read here when not given."""
    if row.kind == "learngene":
        return Holder(row.id, row.name, row.kind, "recompute")
    if row.kind == "derived":
        return Holder(row.id, row.name, row.kind, "rederive")
    if origins is None:
        origins = _origins(session, [row.id]).get(row.id, [])
    # An upload's origin (upload:HOST:PATH) is on the uploader's machine, not this one.
    local = [o for o, _ in origins if not o.startswith(("hf://", "upload:"))]
    uploaded = [o for o, _ in origins if o.startswith("upload:")]
    hub = [(o, r) for o, r in origins if o.startswith("hf://")]
    here = [o for o in local if Path(o).exists()]
    if here:
        return Holder(row.id, row.name, row.kind, "reread", here[0])
    if hub:
        repo, revision = hub[-1]
        repo = repo[len("hf://") :]
        rev = f" --revision {revision}" if revision else ""
        return Holder(row.id, row.name, row.kind, "", f"{repo}{rev}")
    return Holder(row.id, row.name, row.kind, "", (local or uploaded or [""])[-1])


def fix_hint(holders_of_blob: list[Holder], *, corrupt: bool = False) -> str:
    """What restores one blob, in words a user can act on (``corrupt``: the file at its
    name holds other bytes, which zoo sets aside rather than delete)."""
    holders_of_blob = _able(holders_of_blob)
    if not holders_of_blob and corrupt:
        return (
            "no kept artifact holds it: `zoo gc` moves the file into the store's quarantine "
            "folder once past its grace period (bytes zoo did not write are never deleted)"
        )
    if not holders_of_blob:
        return "no kept artifact holds it: `zoo gc` sweeps it once past its grace period"
    h = holders_of_blob[0]
    if h.how == "recompute":
        return f"`zoo verify --repair` extracts learngene {h.name} again from its source"
    if h.how == "rederive":
        return f"`zoo verify --repair` re-derives {h.name} from its recipe"
    if h.how == "reread":
        return f"`zoo verify --repair` reads it again from {h.origin}"
    if h.changed:
        return (
            f"{Path(h.origin) / h.changed} has changed since {h.name} was imported: put the "
            f"imported one back and run `zoo verify --repair`, or `zoo import {h.origin}` to "
            f"make the changed one {h.name}'s"
        )
    if h.origin.startswith("upload:"):
        return (
            f"upload {h.name} again from {h.origin.removeprefix('upload:')} "
            "(`zoo import PATH` with ZOO_ENDPOINT set)"
        )
    if h.origin and Path(h.origin).is_absolute() and not Path(h.origin).exists():
        return f"import {h.name} again from its folder, {h.origin}, no longer on this machine"
    if h.origin:
        return f"import {h.name} again: `zoo import {h.origin}`"
    return f"restore the store from a backup, or remove {h.needed_by} with `zoo rm`"


def restore(reg, digests) -> tuple[list[str], dict[str, str]]:
    """Rewrite the blobs ``digests`` from what can produce them again.

    Returns:
        (digests rewritten, digest -> why it was not for the others).
    """
    digests = set(digests)
    with reg.session() as session:
        by_digest = holders(session, digests)
    plan: dict[int, Holder] = {}
    for d in digests:
        for h in _able(by_digest.get(d, [])):
            if h.how:
                plan.setdefault(h.artifact_id, h)
                break
    done: set[str] = set()
    failed: dict[str, str] = {}
    for h in sorted(plan.values(), key=lambda h: (_ORDER[h.how], h.artifact_id)):
        try:
            done.update(_restore_one(reg, h, digests - done))
        except ZooError as exc:
            for d in digests - done:
                if any(x.artifact_id == h.artifact_id for x in by_digest.get(d, [])):
                    failed[d] = f"{h.name}: {exc}"  # whole: a folder name may hold a newline
    for d in digests - done:
        failed.setdefault(d, fix_hint(by_digest.get(d, [])))
    return sorted(done), failed


def _restore_one(reg, holder: Holder, wanted: set[str]) -> set[str]:
    from zoo.db.models import Artifact as Row

    with reg.session() as session:
        info = queries.to_info(session, session.get(Row, holder.artifact_id))
        extract_edge = next(
            (e for e in queries.edges(session, child_id=info.id) if e.relation == "extract"),
            None,
        )
        source = (
            queries.to_info(session, session.get(Row, extract_edge.parent_id))
            if extract_edge is not None
            else None
        )
    mine = {t.digest for t in info.tensors} & wanted
    if holder.how == "recompute":
        from .learngenes import compute, restore_blobs

        if source is None:
            raise _cannot(f"{info.name} has no recorded source to extract it from again")
        recipe = extract_edge.recipe

        def again(emit) -> None:
            compute(reg, source, recipe, emit=emit)

        return set(restore_blobs(reg, info, again)) & mine
    if holder.how == "rederive":
        from .learngenes import restore_blobs
        from .materialize import rederive

        def rederived(emit) -> None:
            for name, t in rederive(reg, info.name).state_dict.items():
                emit(name, t)

        return set(restore_blobs(reg, info, rederived)) & mine
    return _reread(reg, info, holder.origin, mine | ({f.digest for f in info.files} & wanted))


def _reread(reg, info, origin: str, wanted: set[str]) -> set[str]:
    from zoo.checkpoint import open_checkpoint
    from zoo.checkpoint.side_files import find_side_files

    reg.check_writable()
    done = set()
    with open_checkpoint(Path(origin)) as ckpt:
        here = {t.digest: t.name for t in ckpt.tensors}
        files = {f.digest: f.data for f in find_side_files(ckpt.root)}
        for digest in sorted(wanted):
            if digest in here:
                reg.store.rewrite(digest, ckpt.read_bytes(here[digest]))
                done.add(digest)
            elif digest in files:  # its tokenizer, configs, model card
                reg.store.rewrite(digest, files[digest])
                done.add(digest)
    if wanted - done:
        raise _cannot(f"{origin} no longer holds the files {info.name} was imported with")
    return done


def _cannot(message: str) -> ZooError:
    from zoo.errors import VerificationError

    return VerificationError(message + ".")
