"""Keeping a shared registry sound: remove, collect garbage, check, verify.

The rule everything here follows: the store may hold blobs no row points at (a writer is
killed between its blob and its row, or a row was deleted), but a kept row must never
point at a missing blob. So writers put blobs before rows; ``rm`` only marks rows;
``gc`` sweeps a blob only when no kept row needs it *and* it is older than a grace period
(writers refresh the time of blobs they reuse, see :meth:`zoo.store.BlobStore.keep`);
``fsck`` reports both kinds of problem and repairs only the harmless kind.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import and_, delete, exists, or_, select, union_all
from sqlalchemy.orm import Session

from zoo.api.arguments import parse_duration
from zoo.api.lineage import RECORDED
from zoo.api.reports import BlobProblem, FsckReport, GcReport, StoreItem, VerifyReport
from zoo.db import queries
from zoo.db.entities import ArtifactInfo
from zoo.db.models import (
    Alias,
    Artifact,
    ArtifactFile,
    ArtifactTensor,
    Edge,
    FamilyDefault,
    ImportRecord,
)
from zoo.errors import (
    BlobCorruptError,
    BlobNotAFileError,
    ConflictError,
    NotFoundError,
)

DEFAULT_GRACE = "24h"
_CHUNK = 500


# --- what rows point at ----------------------------------------------------------------


def _refs():
    """Every blob a row points at: its tensors and the files stored beside them
    (tokenizers, configs, model cards), as ``(artifact_id, digest, nbytes)``."""
    return union_all(
        select(ArtifactTensor.artifact_id, ArtifactTensor.digest, ArtifactTensor.nbytes),
        select(ArtifactFile.artifact_id, ArtifactFile.digest, ArtifactFile.nbytes),
    ).subquery("blob_refs")


# --- the lineage graph, as the collector sees it -----------------------------------------


def _edges(session: Session, relations: Iterable[str] | None = None) -> list[tuple[int, int]]:
    """(parent, child) of every edge, or of those of ``relations``."""
    query = select(Edge.parent_id, Edge.child_id)
    if relations is not None:
        query = query.where(Edge.relation.in_(list(relations)))
    return list(session.execute(query))


def _walk(start: Iterable[int], step: dict[int, set[int]]) -> set[int]:
    """Every id reachable from ``start`` through ``step`` (``start`` excluded unless looped)."""
    seen: set[int] = set()
    todo = [n for s in start for n in step.get(s, ())]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(step.get(node, ()))
    return seen


def _parents_of(edges: list[tuple[int, int]]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for parent, child in edges:
        out.setdefault(child, set()).add(parent)
    return out


def _children_of(edges: list[tuple[int, int]]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for parent, child in edges:
        out.setdefault(parent, set()).add(child)
    return out


def _stored_refs_of(
    session: Session, artifact_ids: Iterable[int], *, removed_only: bool = False
) -> list[tuple[int, str, int]]:
    """``(artifact, digest, nbytes)`` of every blob the stored (non-virtual) artifacts
    among ``artifact_ids`` hold (the removed ones only, with ``removed_only``); a virtual
    one's tensors are re-derived, never read from the store."""
    ids = sorted(set(artifact_ids))
    out: set[tuple[int, str, int]] = set()
    for start in range(0, len(ids), _CHUNK):
        refs = _refs()
        query = (
            select(refs.c.artifact_id, refs.c.digest, refs.c.nbytes)
            .join(Artifact, Artifact.id == refs.c.artifact_id)
            .where(refs.c.artifact_id.in_(ids[start : start + _CHUNK]), Artifact.virtual.is_(False))
        )
        if removed_only:
            query = query.where(Artifact.deleted_at.is_not(None))
        out.update(tuple(r) for r in session.execute(query))
    return sorted(out)


def _stored_digests_of(session: Session, artifact_ids: Iterable[int]) -> set[str]:
    """The digests the stored (non-virtual) artifacts among ``artifact_ids`` hold."""
    return {digest for _, digest, _ in _stored_refs_of(session, artifact_ids)}


def removed_inputs(session: Session, artifact_ids: Iterable[int]) -> list[tuple[int, str, int]]:
    """``(ancestor, digest, nbytes)`` of every blob held by a removed ancestor that one of
    ``artifact_ids`` is made from, up the edges zoo recorded: what `zoo export` and `zoo
    rederive` read to derive it again, kept by gc (:func:`_mark`) and checked by fsck and
    verify as the artifact's own."""
    made_from = _parents_of(_edges(session, RECORDED))
    return _stored_refs_of(session, _walk(artifact_ids, made_from), removed_only=True)


def removed_input_heirs(session: Session, digests: Iterable[str]) -> list[tuple[str, int, int]]:
    """``(digest, ancestor, heir)`` for each removed, stored artifact holding one of
    ``digests`` that a kept artifact (the heir) is made from, up the edges zoo recorded:
    the ancestor restores the blob, on the heir's behalf."""
    digests = sorted(set(digests))
    held: list[tuple[str, int]] = []
    for start in range(0, len(digests), _CHUNK):
        refs = _refs()
        held += session.execute(
            select(refs.c.digest, refs.c.artifact_id)
            .join(Artifact, Artifact.id == refs.c.artifact_id)
            .where(
                refs.c.digest.in_(digests[start : start + _CHUNK]),
                Artifact.deleted_at.is_not(None),
                Artifact.virtual.is_(False),
            )
            .distinct()
        ).all()
    if not held:
        return []
    kept = set(_kept_ids(session))
    made_into = _children_of(_edges(session, RECORDED))
    return sorted(
        (digest, ancestor, heir)
        for digest, ancestor in held
        for heir in _walk([ancestor], made_into) & kept
    )


def _inherited_refs(session: Session, artifact_ids: Iterable[int]) -> list[tuple[int, str, int]]:
    """``(heir, digest, nbytes)`` of every side file one of ``artifact_ids`` takes from an
    ancestor (a tokenizer, a card: zoo.api.side_files.files_of), removed or not."""
    from .side_files import inherited_files

    return [
        (heir, f.digest, f.nbytes)
        for heir, inherited in inherited_files(session, artifact_ids).items()
        for f in inherited.files
    ]


def _kept_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Artifact.id).where(Artifact.deleted_at.is_(None))))


def _mark(session: Session) -> tuple[set[str], set[int]]:
    """(digests that must stay: :func:`_needed`, ids of rows that must stay: kept ones and
    their ancestors).

    A row stays while a kept one descends from it by any edge (a declared parent is the
    anchor of its child's lineage), but its blobs go unless they are needed.
    """
    kept = set(_kept_ids(session))
    needed_rows = kept | _walk(kept, _parents_of(_edges(session)))
    return set(_needed(session)), needed_rows


def _needed_by_virtual(session: Session, artifact_id: int) -> set[str]:
    """The stored digests a virtual artifact needs to be re-derived (through virtual
    ancestors, which are re-derived in turn), up the edges zoo recorded, and the side
    files it takes from an ancestor."""
    made_from = _parents_of(_edges(session, RECORDED))
    digests = _stored_digests_of(session, _walk([artifact_id], made_from))
    return digests | {digest for _, digest, _ in _inherited_refs(session, [artifact_id])}


# --- rm ----------------------------------------------------------------------------------


def rm(reg, query: str, *, cascade: bool = False) -> list[ArtifactInfo]:
    """Remove an artifact (soft delete); see :meth:`zoo.Registry.rm`.

    Only what zoo made from it (extracted, materialized: the relations zoo records) holds
    it back or goes with ``cascade``. A checkpoint declared as made from it (``zoo link``,
    a model card's ``base_model``) is the user's own and stays; its lineage keeps the
    removed row as its parent, which gc does not forget while a kept row descends from it.
    """

    def work(session: Session) -> list[ArtifactInfo]:
        row = queries.resolve(session, query)
        # Locked before its descendants are read: a materialization recording a new one
        # commits before this and is seen, or waits (its edge needs the row). Another
        # `zoo rm` (and a gc forgetting the row) may have got there first: then this one
        # says so as if it had come later.
        locked = _locked(session, [row.id], removed=False)
        if not locked:
            session.expire_all()  # read afresh: removed or forgotten meanwhile, says which
            queries.resolve(session, query)
            raise NotFoundError(f"{query!r} was removed while `zoo rm` ran.")
        row = locked[0]
        deleted = {
            i for i in session.scalars(select(Artifact.id).where(Artifact.deleted_at.isnot(None)))
        }
        made_from = _children_of(_edges(session, RECORDED))
        below = _walk([row.id], made_from) - deleted - {row.id}
        if below and not cascade:
            names = sorted(session.scalars(select(Artifact.name).where(Artifact.id.in_(below))))
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise ConflictError(
                f"{row.name} cannot be removed: {shown} derived from it "
                f"{'is' if len(names) == 1 else 'are'} still kept; remove "
                f"{'it' if len(names) == 1 else 'them'} first or pass cascade=True.",
                params=["cascade"],
            )
        stamp = queries.now()
        doomed = [row, *_locked(session, sorted(below), removed=False)]  # less any gone
        for r in doomed:
            r.deleted_at = stamp
        session.flush()
        return [queries.to_info(session, r, tensors=False) for r in doomed]

    return reg.transaction(work)


def _locked(session: Session, ids: list[int], *, removed: bool) -> list[Artifact]:
    """The rows ``ids`` that are still removed (or still kept), locked in id order and
    read afresh: what `zoo rm` and `zoo gc` change, less what another writer changed
    first (a writer that finds a row locks it too: queries.find_by_content)."""
    state = Artifact.deleted_at.isnot(None) if removed else Artifact.deleted_at.is_(None)
    rows: list[Artifact] = []
    for start in range(0, len(ids), _CHUNK):
        rows += session.scalars(
            select(Artifact)
            .where(Artifact.id.in_(ids[start : start + _CHUNK]), state)
            .order_by(Artifact.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    return rows


# --- gc ----------------------------------------------------------------------------------


def _refuse_shared_store(reg, command: str, *, sweeps: bool = True) -> None:
    """Blobs another registry's rows need look like orphans here: never sweep them.
    ``sweeps``: the command deletes, so it is this registry's use of the store and claims
    it (refusing a folder of files zoo did not write); a dry run only looks."""
    _refuse_a_copy(reg, command, sweeps=sweeps)
    others = reg.store.others(reg.registry_id)
    if sweeps and (not others or not reg.store.claims()):
        # Claimed once no other registry's claim refuses the sweep, so a refused command
        # makes no owner; a store of blobs nobody claimed (from before registries recorded
        # their ids) gets the marker a person deletes, and this registry's claim beside it.
        reg.store.claim(reg.registry_id)
    if reg.store.UNCLAIMED in others:
        marker = f"{reg.store.CLAIMS}/{reg.store.UNCLAIMED}"
        if reg.store.UNCLAIMED in reg.store.claims():
            then = f"delete {marker} in it and run again"
        else:  # a look writes no marker: the first sweep does, then stops for a person
            then = (
                f"run it without dry_run=True once (it records the marker {marker} and stops), "
                "delete that marker, and run again"
            )
        raise ConflictError(
            f"The store {reg.store.url} holds blobs no registry has claimed (from before zoo "
            f"recorded which registries use a store, or its {reg.store.CLAIMS} folder was "
            f"removed); {command} cannot tell whether another registry needs them. If no "
            f"other registry uses this store, {then}.",
            params=["dry_run"],
        )
    if others:
        raise ConflictError(
            f"The store {reg.store.url} is also used by {len(others)} other registr"
            f"{'y' if len(others) == 1 else 'ies'} ({', '.join(o[:8] for o in others)}); "
            f"{command} would delete blobs they need. Give each registry its own store "
            f"(ZOO_STORE_URL); for a registry that no longer exists, `reg.release_claim("
            f"{repr(others[0][:8]) if len(others) == 1 else 'ID'})` removes its claim once it "
            "finds its database gone."
        )


def _refuse_a_copy(reg, command: str, *, sweeps: bool) -> None:
    """A copy of a SQLite registry (a backup, a staging copy) carries the original's id:
    pointed at the original's store, it would sweep every blob the original wrote since
    the copy as an orphan. Only the file the store's claim names sweeps (and writes):
    zoo.api.store_claim.check.
    PostgreSQL databases are not told apart this way (a host has many names):
    docs/operations.md says what to keep apart."""
    from zoo.api import store_claim

    here = reg._place()
    if here is None:
        return
    text = reg.store.claim_place(reg.registry_id)
    if text is None:  # no claim yet: made, with this file's place, once no other refuses
        return
    # A claim that names no file (emptied to hand it over) is this one's now.
    anew = not text or store_claim.check(reg.store, reg.registry_id, text, here, command=command)
    if anew and sweeps:
        reg.store.set_claim_place(reg.registry_id, here.text())


def gc(reg, *, grace: str | float = DEFAULT_GRACE, dry_run: bool = False) -> GcReport:
    """Sweep unreferenced blobs and forget removed rows; see :meth:`zoo.Registry.gc`."""
    grace_s = parse_duration(grace)
    store = reg.store
    # A dry run too: it previews what gc does, and gc refuses (it listed the other
    # registries' blobs as ones it would sweep).
    _refuse_shared_store(reg, "reg.gc()", sweeps=not dry_run)
    # List before marking: a blob written after the listing is not a candidate, and a
    # row committed after the mark refreshed its blobs' time (keep), which the re-check
    # just before each delete sees.
    listing = list(store.entries())
    with reg.session() as session:
        marked, _ = _mark(session)
    now = time.time()
    candidates = [e for e in listing if e.digest not in marked]
    old = [e for e in candidates if now - e.mtime > grace_s]
    swept, quarantined = [], []
    for entry in old:
        done = _sweep(store, entry.digest, grace_s, dry_run=dry_run)
        if done is not None:
            (swept if done else quarantined).append(
                StoreItem(entry.digest, entry.size, now - entry.mtime)
            )
    hard, placeholders, kept_deleted = _forget_removed(reg, dry_run=dry_run)
    return GcReport(
        dry_run=dry_run,
        grace_s=grace_s,
        marked=len(marked),
        swept=tuple(swept),
        too_young=len(candidates) - len(old),
        hard_deleted=tuple(hard),
        kept_deleted=tuple(kept_deleted),
        unused_placeholders=tuple(placeholders),
        quarantined=tuple(quarantined),
        quarantine=store.quarantine_url,
    )


def _sweep(store, digest: str, grace_s: float, *, dry_run: bool = False) -> bool | None:
    """Take an unneeded blob older than the grace period out of the store: True when it
    is (or, with ``dry_run``, would be) deleted; False when the file at its name holds
    bytes that do not hash to that name, which zoo did not write and so moves into the
    store's quarantine folder rather than delete; None when it is left (gone, or a writer
    reused it meanwhile)."""
    # Asked first: a writer reusing it meanwhile freshens it. On S3 the mark zoo wrote
    # with the object answers, so a sweep costs no download of what it sweeps.
    intact = store.written_here(digest)
    if intact is None:
        return None
    if not dry_run:
        try:
            if time.time() - store.modified(digest) <= grace_s:
                return None  # a writer is reusing it right now
        except FileNotFoundError:
            return None
        if intact:
            store.delete(digest)
        elif store.quarantine(digest) is None:
            return None
    return intact


def _forget_removed(reg, *, dry_run: bool) -> tuple[list[str], list[str], list[str]]:
    """Hard-delete removed rows that no kept row descends from, and placeholders that no
    edge uses any more (they exist only to anchor a model card's base_model edges);
    (every name deleted, the placeholders among them, removed rows still needed)."""

    def work(session: Session) -> tuple[list[str], list[str], list[str]]:
        _, needed = _mark(session)
        removed = dict(
            session.execute(
                select(Artifact.id, Artifact.name).where(Artifact.deleted_at.isnot(None))
            ).all()
        )
        doomed_rows = set(removed) - needed
        linked = {n for e in _edges(session) if not set(e) & doomed_rows for n in e}
        unused = dict(
            session.execute(
                select(Artifact.id, Artifact.name).where(
                    Artifact.kind == "placeholder", Artifact.deleted_at.is_(None)
                )
            ).all()
        )
        unused = {i: n for i, n in unused.items() if i not in linked}
        kept = sorted(removed[i] for i in set(removed) & needed)
        doomed = sorted(doomed_rows)
        if doomed and not dry_run:
            # Forgotten only while still removed: a writer bringing one back (an import of
            # the same content) either committed before and is seen here, or waits and
            # then finds the row gone.
            doomed = [r.id for r in _locked(session, doomed, removed=True)]
            for start in range(0, len(doomed), _CHUNK):
                ids = doomed[start : start + _CHUNK]
                session.execute(delete(Edge).where(Edge.child_id.in_(ids)))
                session.execute(delete(Edge).where(Edge.parent_id.in_(ids)))
                for model in (ArtifactTensor, ArtifactFile, ImportRecord, FamilyDefault):
                    session.execute(delete(model).where(model.artifact_id.in_(ids)))
                gone = delete(Alias).where(Alias.artifact_id.in_(ids)).returning(Alias.name)
                queries.record_alias_removals(session, session.scalars(gone).all(), reg.user)
                session.execute(
                    delete(Artifact).where(Artifact.id.in_(ids), Artifact.deleted_at.isnot(None))
                )
        if unused and not dry_run:  # after the edges of the rows just forgotten are gone
            _forget_placeholders(session, sorted(unused), reg.user)
        everything = sorted([*(removed[i] for i in doomed), *unused.values()])
        return everything, sorted(unused.values()), kept

    if dry_run:
        with reg.session() as session:
            return work(session)
    return reg.transaction(work)


def _forget_placeholders(session: Session, ids: list[int], by: str) -> None:
    """Delete these placeholders and their aliases (kept in the aliases' history as gone),
    unless an edge to one appeared since they were found unused (an import recording its
    card's base_model meanwhile)."""
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for model, column in ((Alias, Alias.artifact_id), (Artifact, Artifact.id)):
            in_use = exists().where(or_(Edge.parent_id == column, Edge.child_id == column))
            statement = delete(model).where(column.in_(chunk), ~in_use)
            if model is Alias:
                gone = session.scalars(statement.returning(Alias.name)).all()
                queries.record_alias_removals(session, gone, by)
            else:
                session.execute(statement)


def _names_of(session: Session, artifact_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(artifact_ids))
    out: dict[int, str] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        out.update(
            session.execute(select(Artifact.id, Artifact.name).where(Artifact.id.in_(chunk))).all()
        )
    return out


# --- fsck --------------------------------------------------------------------------------


def _needed(session: Session) -> dict[str, int]:
    """digest -> nbytes of every blob that must stay: what gc keeps, fsck and verify
    check, and fsck counts as no orphan (one definition for the three).

    A blob is needed when a kept, stored (non-virtual) artifact holds it, when a kept
    artifact needs it to be re-derived (every stored tensor of what it was made from, up
    the edges zoo recorded: extract, materialize; a stored one too, which `zoo export`
    and `zoo rederive` derive again, even where its parent was removed and it was brought
    back by an import of its folder), or when a kept artifact takes it as a side file
    from an ancestor (a base model saved alone, its task model's tokenizer), even of
    artifacts that were removed. So is a blob named by a row whose artifact is not there
    (deleted by a tool that does not check foreign keys): the backup that restores that
    artifact needs its blobs, and fsck counts the row as a reference.
    """
    refs = _refs()
    needed = dict(
        session.execute(
            select(refs.c.digest, refs.c.nbytes)
            .outerjoin(Artifact, Artifact.id == refs.c.artifact_id)
            .where(
                or_(
                    Artifact.id.is_(None),
                    and_(Artifact.deleted_at.is_(None), Artifact.virtual.is_(False)),
                )
            )
            .distinct()
        ).all()
    )
    kept = _kept_ids(session)
    # A kept ancestor's stored digests are counted above already: only removed ones add.
    needed.update((d, n) for _, d, n in _inherited_refs(session, kept))
    needed.update((d, n) for _, d, n in removed_inputs(session, kept))
    return needed


def _holders(session: Session, digests: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """digest -> names of the kept, stored artifacts holding it, and of the kept
    artifacts taking it as a side file from an ancestor or derived again from a removed
    ancestor holding it."""
    digests = sorted(set(digests))
    out: dict[str, set[str]] = {}
    wanted = set(digests)
    heirs = [(h, d) for h, d, _ in _inherited_refs(session, _kept_ids(session)) if d in wanted]
    heirs += [(h, d) for d, _, h in removed_input_heirs(session, digests)]
    names = _names_of(session, {h for h, _ in heirs})
    for heir, digest in heirs:
        out.setdefault(digest, set()).add(names[heir])
    for start in range(0, len(digests), _CHUNK):
        refs = _refs()
        for digest, name in session.execute(
            select(refs.c.digest, Artifact.name)
            .join(Artifact, Artifact.id == refs.c.artifact_id)
            .where(
                refs.c.digest.in_(digests[start : start + _CHUNK]),
                Artifact.deleted_at.is_(None),
                Artifact.virtual.is_(False),
            )
        ):
            out.setdefault(digest, set()).add(name)
    return {d: tuple(sorted(n)) for d, n in out.items()}


def fsck(reg, *, repair: bool = False, grace: str | float = DEFAULT_GRACE) -> FsckReport:
    """Check the registry against its store; see :meth:`zoo.Registry.fsck`."""
    grace_s = parse_duration(grace)
    store = reg.store
    if repair:
        _refuse_shared_store(reg, "reg.fsck(repair=True)")
    # Rows first, then the listing: a row read here had its blobs written before it was
    # committed, so a blob absent from the later listing is really missing.
    with reg.session() as session:
        needed = _needed(session)
        dangling = queries.dangling_rows(session)
    temps = list(store.temp_entries())
    listing = {e.digest: e for e in store.entries()}
    # ...and the references again after the listing: a blob listed before its row was
    # committed is not an orphan.
    with reg.session() as session:
        referenced = set(session.scalars(select(_refs().c.digest).distinct()))
        now = time.time()
        problems: list[BlobProblem] = []
        missing = [d for d in needed if d not in listing and not store.has(d)]
        wrong = [d for d in needed if d in listing and listing[d].size != needed[d]]
        holders = _holders(session, missing + wrong)
        still_needed = _needed(session) if missing else {}
    for d in sorted(missing):
        if d in still_needed:  # not removed (and swept) while we looked
            what = "not a file" if store.not_a_file(d) else "missing"  # as verify says
            problems.append(BlobProblem(d, what, holders.get(d, ())))
    for d in sorted(wrong):
        problems.append(
            BlobProblem(
                d,
                "wrong-size",
                holders.get(d, ()),
                f"stored {listing[d].size} bytes, rows say {needed[d]}",
            )
        )
    orphans = [
        StoreItem(d, e.size, now - e.mtime)
        for d, e in sorted(listing.items())
        if d not in referenced
    ]
    temp_items = [StoreItem(t.name, t.size, now - t.mtime) for t in temps]
    outputs, dead = _output_leftovers(reg)
    removed: list[str] = []
    restored: list[str] = []
    quarantined: list[str] = []
    if repair:
        for path, back in _clean_outputs(reg, dead):
            (restored if back else removed).append(path)
        for t in temp_items:
            if t.age_s > grace_s:
                store.remove_temp(t.name)
                removed.append(t.name)
        swept, quarantined = _remove_orphans(
            reg, [o for o in orphans if o.age_s > grace_s], grace_s
        )
        removed += swept
    return FsckReport(
        store_url=store.url,
        checked_rows=len(needed),
        stored_blobs=len(listing),
        problems=tuple(problems),
        temp_files=tuple(temp_items),
        orphans=tuple(orphans),
        output_leftovers=tuple(outputs),
        removed=tuple(removed),
        dangling=tuple(dangling),
        grace_s=grace_s,
        repair=repair,
        shared_with=len(store.others(reg.registry_id)),
        restored=tuple(restored),
        quarantined=tuple(quarantined),
        quarantine=store.quarantine_url,
    )


def _output_leftovers(reg) -> tuple[list[str], list[tuple[int, str, int]]]:
    """Folders that output writers on this host left when killed, found through the
    output journal; and the journal rows of those dead writers."""
    from .export import leftovers, pid_alive, writer_host

    with reg.session() as session:
        rows = queries.outputs_on(session, writer_host())
    found, dead = [], []
    for output_id, path, pid, _ in rows:
        if pid != os.getpid() and not pid_alive(pid):
            dead.append((output_id, path, pid))
            found += [str(p) for p in leftovers(Path(path), pid=pid)]
    return sorted(found), dead


def _clean_outputs(reg, dead: list[tuple[int, str, int]]) -> list[str]:
    """Undo what dead output writers left (a set-aside previous output goes back in
    place if nothing replaced it) and close their journal rows."""
    from .export import clean_leftovers

    handled = []
    for output_id, path, pid in dead:
        # A folder put back is named where it is now, the --out it was; one removed by
        # the hidden name it had.
        handled += [
            (path if back else str(p), back) for p, back in clean_leftovers(Path(path), pid=pid)
        ]
        reg.transaction(lambda s, i=output_id: queries.remove_output(s, i))
    return handled


def _remove_orphans(reg, orphans: list[StoreItem], grace_s: float) -> tuple[list[str], list[str]]:
    """(the orphans deleted, those moved into quarantine: :func:`_sweep`)."""
    if not orphans:
        return [], []
    with reg.session() as session:
        referenced = set()
        names = [o.name for o in orphans]
        for start in range(0, len(names), _CHUNK):
            refs = _refs()
            referenced.update(
                session.scalars(
                    select(refs.c.digest)
                    .where(refs.c.digest.in_(names[start : start + _CHUNK]))
                    .distinct()
                )
            )
    removed, quarantined = [], []
    for o in orphans:
        if o.name in referenced:
            continue  # a row appeared meanwhile
        done = _sweep(reg.store, o.name, grace_s)
        if done is not None:
            (removed if done else quarantined).append(o.name)
    return removed, quarantined


# --- verify ------------------------------------------------------------------------------


def verify(
    reg, query: str | None = None, *, repair: bool = False, workers: int | None = None
) -> VerifyReport:
    """Re-hash stored blobs; see :meth:`zoo.Registry.verify`."""
    report = _verify(reg, query, workers=workers)
    # A blob this user may not read is neither known damaged nor replaced: left alone.
    damaged = [p.digest for p in report.problems if p.problem != "unreadable"]
    if not repair or not damaged:
        return dataclasses.replace(report, repair=repair)
    from .repair import restore

    _, failed = restore(reg, damaged)
    # What is still damaged is whatever a fresh look finds, with why it was not restored.
    after = _verify(reg, query, workers=workers)
    problems = tuple(
        dataclasses.replace(p, fix=f"not restored: {failed[p.digest]}") if p.digest in failed else p
        for p in after.problems
    )
    repaired = sorted({p.digest for p in report.problems} - {p.digest for p in problems})
    # A damaged blob is rewritten only after its bytes are set aside (BlobStore.rewrite).
    corrupt = {p.digest for p in report.problems if p.problem == "corrupt"}
    return dataclasses.replace(
        after,
        problems=problems,
        repaired=tuple(repaired),
        repair=True,
        quarantined=tuple(d for d in repaired if d in corrupt),
        quarantine=reg.store.quarantine_url,
    )


_UNREADABLE_FIX = (
    "let this user read it (or run as one who may), then run `zoo verify` again; "
    "`--repair` leaves it as it is"
)


def _verify(reg, query: str | None, *, workers: int | None) -> VerifyReport:
    from .repair import fix_hint, holders

    store = reg.store
    with reg.session() as session:
        if query is None:
            needed = set(_needed(session))
            digests = sorted(set(store.digests()) | needed)
        else:
            row = queries.resolve(session, query)
            if row.virtual:
                digests = sorted(_needed_by_virtual(session, row.id))
            else:
                records = [
                    *queries.tensor_records(session, row.id),
                    *queries.file_records(session, row.id),
                ]
                inherited = {d for _, d, _ in _inherited_refs(session, [row.id])}
                # What `zoo export` derives it again from, where a removed ancestor holds
                # it (a kept one's blobs are verified under that one's name).
                inputs = {d for _, d, _ in removed_inputs(session, [row.id])}
                digests = sorted({r.digest for r in records} | inherited | inputs)

    def check(digest: str) -> tuple[str, int, str | None, str]:
        try:
            return digest, len(store.get(digest)), None, ""
        except BlobCorruptError as exc:  # read all the same: its bytes count as checked
            return digest, (store.stat(digest) or (0, 0))[0], "corrupt", str(exc)
        except BlobNotAFileError as exc:  # a folder, a FIFO, a link the user put there: theirs
            return digest, 0, "not a file", str(exc)
        except FileNotFoundError:
            return digest, 0, "missing", ""
        except PermissionError as exc:  # this user's, not the blob's: the others go on
            return digest, 0, "unreadable", str(exc)

    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check, digests))
    # A blob no kept row needs may be swept while we read: that is not a problem.
    bad = [
        (d, p, m)
        for d, _, p, m in results
        if p is not None and (query is not None or p != "missing" or d in needed)
    ]
    with reg.session() as session:
        held = holders(session, [d for d, _, _ in bad])
    problems = tuple(
        BlobProblem(
            d,
            p,
            tuple(sorted({h.needed_by for h in held.get(d, [])})),
            m,
            f"move what is at its name away, then: {fix_hint(held.get(d, []))}"
            if p == "not a file"
            else _UNREADABLE_FIX
            if p == "unreadable"
            else fix_hint(held.get(d, []), corrupt=p == "corrupt"),
        )
        for d, p, m in bad
    )
    return VerifyReport(
        checked=len(digests), checked_bytes=sum(n for _, n, _, _ in results), problems=problems
    )
