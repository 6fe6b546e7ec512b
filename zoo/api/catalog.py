"""Registering checkpoints and finding them again: import, list, show, tag, defaults.

Any checkpoint in Hugging Face layout is catalogued: one whose ``model_type`` no family
resizes is a source with no family (stored, listed, audited, verified and collected like
any other; ``extract`` and ``materialize`` refuse it). Import also stores the files around
the weights (zoo.checkpoint.side_files) and the ``base_model`` edges of its model card
(zoo.api.base_models).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.entities import (
    AliasHistoryPage,
    ArtifactInfo,
    ArtifactSummary,
    FileRecord,
    Page,
    TensorRecord,
    check_history_page,
    check_search,
)
from zoo.errors import (
    ChangedWhileReadError,
    ConfigMismatchError,
    ConflictError,
    InvalidCheckpointError,
    InvalidInputError,
    NotFoundError,
    UnknownFamilyError,
)
from zoo.progress import progress_bar
from zoo.text import is_utf8

from .audit import Relative, relative_of
from .cards import DERIVED_TAGS


def _check_layout(family: str, ckpt) -> None:
    """Refuse, before any blob is written, a config.json whose sizes are unusable and
    weights that contradict it (missing layers, wrong widths): grouped into signals on
    meta tensors, no data read. Whatever else the grouping refuses (tensors the family
    does not know, such as adapters) is still importable and refused only when something
    is derived from it."""
    from zoo.families import get_family

    from .tensors import meta_state

    # Sizes every derivation reads (hidden_size 0, 32.5, "32", -1 layers...): refused now,
    # not at the first extract.
    get_family(family).axis_sizes(ckpt.config)
    try:
        get_family(family).to_signals(meta_state(ckpt.tensors), ckpt.config)
    except ConfigMismatchError:
        raise
    except (InvalidCheckpointError, InvalidInputError):
        return


# Kinds whose content is a whole checkpoint, in the order an import looks for it.
IMPORTABLE = ("source", "derived")


def family_name(config) -> str | None:
    """The family that resizes checkpoints of this config.json, or None: zoo then
    catalogues it without one."""
    from zoo.families import family_for_config

    try:
        return family_for_config(config).name
    except UnknownFamilyError:
        return None


def resizable(info: ArtifactInfo):
    """The :class:`~zoo.families.Family` that resizes ``info``.

    Raises:
        UnknownFamilyError: it has none (a catalogued-only checkpoint or a placeholder),
            in one line naming the families zoo resizes.
    """
    from zoo.families import FAMILY_NAMES, get_family

    if info.family is not None:
        return get_family(info.family)
    families = ", ".join(FAMILY_NAMES)
    if info.kind == "placeholder":
        repo = info.info.get("repo_id", info.name)
        raise UnknownFamilyError(
            f"{info.name} is a placeholder for the Hub model {repo}, which a model card names "
            f"as its base; import it first (`reg.import_checkpoint({repo!r})`)."
        )
    model_type = (info.config or {}).get("model_type")
    what = f"a {model_type!r} checkpoint" if model_type else "a checkpoint without a model_type"
    named = (
        get_family(model_type)
        if isinstance(model_type, str) and model_type in FAMILY_NAMES
        else None
    )
    if named is not None:
        # A family's name that is not one of the model types it reads (the multimodal
        # gemma3, whose text model is gemma3_text): say which it reads.
        types = ", ".join(repr(t) for t in named.model_types)
        families += f" (the {model_type} family reads model_type {types})"
    raise UnknownFamilyError(
        f"{info.name} is {what}: zoo catalogues it but resizes only {families}."
    )


def import_checkpoint(
    reg,
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    revision: str | None = None,
    convert_bin: bool = False,
    progress: bool = False,
    origin: str | None = None,
    hub_only: bool = False,
) -> ArtifactInfo:
    """Register a Hugging Face checkpoint; see :meth:`zoo.Registry.import_checkpoint`.
    With ``hub_only``, ``source`` is a Hub repository id and nothing else: no folder of
    this machine is read, whatever the id also names here (a server imports for callers
    whose folders are not on its disk)."""
    from zoo.checkpoint import validate_name

    if name is not None:
        validate_name(name)
    ready = _prepare(
        reg,
        source,
        name=name,
        revision=revision,
        convert_bin=convert_bin,
        progress=progress,
        origin=origin,
        hub_only=hub_only,
    )
    return reg.get_or_create(
        lambda session: _existing(reg, session, ready), lambda session: _create(reg, session, ready)
    )


def import_checkpoints(
    reg, sources, *, convert_bin: bool = False, batch: int = 200, progress: bool = False
) -> list[ArtifactInfo]:
    """Register many checkpoints, ``batch`` of them per write transaction with their
    tensor rows inserted together; see :meth:`zoo.Registry.import_checkpoints`."""
    from zoo.hub import batch_sources

    sources = batch_sources(sources, batch)
    out: list[ArtifactInfo] = []
    with progress_bar(len(sources), "import", enabled=progress) as bar:
        for start in range(0, len(sources), batch):
            chunk = [
                _prepare(reg, s, name=None, revision=None, convert_bin=convert_bin)
                for s in sources[start : start + batch]
            ]

            def work(session: Session, chunk=chunk) -> list[ArtifactInfo]:
                return _write_batch(reg, session, chunk)

            # A unique constraint hit by another writer reruns the chunk: each import
            # checks before it inserts, so the rerun finds the winner's rows.
            out += reg.transaction(work)
            bar.update(len(chunk))
    return out


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """A checkpoint whose blobs are stored: what its rows need."""

    name: str | None
    default_name: str
    origin: str
    commit: str
    family: str | None
    config: dict
    content_hash: str
    tensors: tuple[TensorRecord, ...]
    files: dict[str, str]  # every file's sha256, as the import record keeps them
    side_files: tuple[FileRecord, ...]  # those stored as blobs (tokenizer, configs, card)
    bases: tuple
    relation: str | None
    #: what the folder holds that zoo does not keep ({"name", "why"}), for `zoo show`
    not_kept: tuple[dict, ...]
    layers: int | None
    hidden: int | None
    from_main: bool  # not a pinned revision (see zoo.db.models.ImportRecord)
    #: its card is one zoo wrote for a folder it derived (zoo.api.cards)
    zoo_card: bool = False
    #: the content hash of the registered checkpoint it is a save_pretrained copy of
    #: (zoo.api.audit.relative_of), whose artifact records this import
    same_as: str | None = None
    #: the registered checkpoint it is the base model of, saved on its own
    #: (zoo.api.audit.relative_of): a new source with a ``backbone`` edge from it
    backbone_of: Relative | None = None

    @property
    def plain(self) -> bool:
        """Nothing to record but the artifact, its tensors and its import."""
        return not (
            self.side_files
            or self.bases
            or self.not_kept
            or self.backbone_of
            or self.origin.startswith("hf://")
        )


def _changed(path, tensor: str | None = None, *, why: str | None = None) -> ChangedWhileReadError:
    if tensor is not None:
        what = f"tensor {tensor!r} is not what it held when hashed"
    else:
        what = why or "its weights were cut short as they were read"
    return ChangedWhileReadError.of_import(path, what)


def _prepare(
    reg,
    source,
    *,
    name,
    revision,
    convert_bin,
    progress=False,
    origin: str | None = None,
    hub_only: bool = False,
) -> _Prepared:
    """Read and check a checkpoint and store its blobs (before any row that names them);
    ``origin``, when given, is the provenance kept instead of where it was read from."""
    from zoo.checkpoint import manifest_hash, open_checkpoint
    from zoo.checkpoint.hf import needs_a_folder
    from zoo.checkpoint.side_files import base_models, card_metadata, scan

    from . import tensors as tio

    path, located, commit = _locate(source, revision, hub_only=hub_only)
    origin = origin or located
    if path.is_file():
        raise needs_a_folder(path)
    try:
        opened = open_checkpoint(path, allow_bin=convert_bin)
    except ChangedWhileReadError as exc:
        raise _changed(path, why=exc.why) from None
    with opened as ckpt:
        if ckpt.config is None:
            raise needs_a_folder(path)
        family = family_name(ckpt.config)
        if family is not None:
            _check_layout(family, ckpt)
        content_hash = manifest_hash(ckpt.config, ckpt.tensors)
        tensors = tuple(
            sorted(
                (
                    TensorRecord(t.name, t.dtype, tuple(t.shape), t.nbytes, t.digest)
                    for t in ckpt.tensors
                ),
                key=lambda t: t.name,
            )
        )
        reg.check_writable()  # a read-only registry: refused before any blob is written
        with reg.session() as session:
            known = any(queries.find_by_content(session, k, content_hash) for k in IMPORTABLE)
        same_as = backbone_of = None
        if not known:
            # A copy transformers saved again (its version and dtype written into the
            # config, buffers dropped) is the checkpoint it was loaded from; its base model
            # saved on its own (AutoModel) is a new source made of it.
            relative = relative_of(reg, tensors, ckpt.config)
            if relative is not None and relative.how == "copy":
                same_as = relative.artifact.content_hash
            elif relative is not None:
                backbone_of = relative
        # Blobs first, rows second: a crash in between leaves collectable orphans only.
        total = sum(t.nbytes for t in tensors)
        with progress_bar(total, f"import {Path(path).name}", enabled=progress) as bar:

            def store(t: TensorRecord) -> None:
                read = functools.partial(ckpt.read_bytes, t.name)
                try:
                    if (known or same_as) and not reg.store.verify(t.digest):
                        # Importing a registered checkpoint again restores its damaged blobs.
                        reg.store.rewrite(t.digest, read())
                    # Not has-then-put: a reused blob gets a fresh time so gc leaves it alone.
                    # Checked: the file is read again to be stored, in pieces, and may have
                    # changed since it was hashed (a trainer saving over it).
                    reg.store.put_pieces_if_absent(
                        t.digest, functools.partial(ckpt.pieces, t.name), t.nbytes
                    )
                except ChangedWhileReadError:
                    raise _changed(path, t.name) from None
                bar.update(t.nbytes)

            # On a few threads: one blob's write waits on the disk while the next is
            # copied, and the files' provenance hashing runs meanwhile.
            with tio.writing_to(reg.store):
                tio.parallel_map(
                    store,
                    list(tensors),
                    cost=[t.nbytes for t in tensors],
                    min_cost=tio.store_min_cost(reg.store),
                )
        safetensors = {t.file for t in ckpt.tensors if t.file.endswith(".safetensors")}
        found = scan(ckpt.root, weights=safetensors)
        side = found.found
        with tio.writing_to(reg.store):
            for f in side:
                reg.store.put_if_absent(f.digest, functools.partial(bytes, f.data), len(f.data))
        try:
            weight_files = ckpt.files  # hashed in the background, from the same files
        except ChangedWhileReadError as exc:
            raise _changed(path, why=exc.why) from None
        files = {**weight_files, **{f.name: f.digest for f in side}}
        config = ckpt.config
    card = next((f for f in side if f.role == "card"), None)
    card_meta = card_metadata(card.data.decode("utf-8", "replace")) if card else {}
    bases, relation = base_models(card_meta)
    tags = card_meta.get("tags")
    zoo_card = isinstance(tags, list) and set(DERIVED_TAGS) <= set(map(str, tags))
    if zoo_card:
        text = card.data.decode("utf-8", "replace")
        bases, relation = _zoo_card_bases(text, bases, content_hash)
    layers, hidden = model_size(family, config)
    return _Prepared(
        name=name,
        default_name=_default_name(source if commit else path),
        origin=origin,
        commit=commit,
        family=family,
        config=config,
        content_hash=content_hash,
        tensors=tensors,
        files=files,
        side_files=tuple(FileRecord(f.name, f.role, f.nbytes, f.digest) for f in side),
        bases=tuple(bases),
        relation=relation,
        not_kept=tuple(entry.to_json() for entry in found.left),
        zoo_card=zoo_card,
        layers=layers,
        hidden=hidden,
        from_main=revision in (None, "main"),
        same_as=same_as,
        backbone_of=backbone_of,
    )


# What a card zoo wrote names in its lineage: "- source: `NAME` (HASH)" and
# "- this checkpoint: HASH".
_ZOO_CARD_SOURCE = re.compile(r"^- source: `[^`\n]*` \(([0-9a-f]{64})\)$", re.MULTILINE)
_ZOO_CARD_SELF = re.compile(r"^- this checkpoint: ([0-9a-f]{64})$", re.MULTILINE)
#: The relation of a folder zoo derived, imported as it was written, to its bases.
DERIVED_ELSEWHERE = "derive"


def _zoo_card_bases(text: str, bases: list[str], content_hash: str) -> tuple[list, str]:
    """The bases of a folder whose card zoo wrote for a checkpoint it derived, and their
    relation: the Hub repositories its ``base_model`` names (ORG/NAME; zoo names no other),
    and the source its lineage names by content hash, for the registry to find if it
    holds it (``("content", HASH)``). A name without an organization is not taken: a zoo
    card may name a source by the name it has in the registry that wrote it, and a
    placeholder for it would claim a Hub repository that does not exist. The relation is
    ``derive`` while the weights are those zoo derived (another registry's output), else
    ``finetune``: they changed since, as training changes an initialization."""
    hub = [b for b in bases if "/" in b]
    source = _ZOO_CARD_SOURCE.search(text)
    found = [("content", source.group(1))] if source else []
    written = _ZOO_CARD_SELF.search(text)
    same = written is not None and written.group(1) == content_hash
    return [*found, *hub], DERIVED_ELSEWHERE if same else "finetune"


def model_size(family: str | None, config) -> tuple[int | None, int | None]:
    """(layers, hidden size) a config gives, as its family reads them (a checkpoint no
    family resizes: its ``num_hidden_layers`` and ``hidden_size``); None where it gives
    none."""
    from zoo.errors import ZooError
    from zoo.families import get_family

    if family is None:  # catalogued only: the keys most configs use
        return _config_int(config, "num_hidden_layers", "n_layer"), _config_int(
            config, "hidden_size", "n_embd"
        )
    try:
        sizes = get_family(family).axis_sizes(config)
    except (ZooError, KeyError, TypeError, ValueError):
        return None, None
    return sizes.get("layers"), sizes.get("hidden")


def _config_int(config, *keys: str) -> int | None:
    for key in keys:
        value = (config or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _record(reg, session: Session, row, ready: _Prepared) -> tuple[FileRecord, ...]:
    """What an import adds besides the row: its files, the import, the Hub's edges.
    Returns the stored files it replaced."""
    from .base_models import adopt_placeholder, drop_stale_card_edges, record_base_models

    queries.add_import(
        session,
        row,
        origin=ready.origin,
        revision=ready.commit,
        files=ready.files,
        by=reg.user,
        from_main=ready.from_main,
    )
    _record_not_kept(row, ready)
    card_in_effect, replaced = False, ()
    if ready.side_files:
        # By role: the newest import that brings a tokenizer, a card or a config defines
        # that role; a role it does not bring stays (a save_pretrained copy brings
        # generation_config.json alone, and must not take the tokenizer and card away).
        current = queries.file_records(session, row.id)
        if not current:
            # One storing none of its own has its nearest ancestor's (a derived checkpoint,
            # its source's tokenizer): they are its current files, so those of a role the
            # import does not bring stay, now stored on it.
            from .side_files import inherited_files

            heir = inherited_files(session, [row.id]).get(row.id)
            current = list(heir.files) if heir else []
        side = list(ready.side_files)
        if ready.zoo_card and any(f.role == "card" for f in current):
            # The card zoo wrote for a folder it derived (one at the source's own size is
            # the source itself) does not replace the artifact's own.
            side = [f for f in side if f.role != "card"]
        brought = {f.role for f in side}
        if "tokenizer" in brought:
            # A tokenizer's chat template is its own, in tokenizer_config.json or beside it
            # (chat_template.jinja, which transformers reads first): a stored template file
            # would override the one the tokenizer brought.
            brought.add("chat_template")
        card_in_effect = "card" in brought
        kept = [f for f in current if f.role not in brought]
        replaced = tuple(f for f in current if f.role in brought and f not in side)
        queries.set_files(session, row, [*kept, *side])
    if ready.origin.startswith("hf://"):
        adopt_placeholder(session, row, ready.origin[len("hf://") :], reg.user)
    if row.kind == "source":  # a derived one's lineage is zoo's own
        bases = list(ready.bases)
        if card_in_effect:
            # The edges a card declared follow the card in effect: a corrected card's
            # re-import takes back what the card it replaces declared.
            drop_stale_card_edges(session, row, bases, ready.relation, by=reg.user)
        record_base_models(session, row, bases, ready.relation, by=reg.user)
        if ready.backbone_of is not None:
            _record_backbone(session, row, ready.backbone_of, by=reg.user)
    return replaced


#: The relation of a task model's base model, saved on its own, to the task model.
BACKBONE = "backbone"


def _record_backbone(session: Session, row, relative: Relative, *, by: str) -> None:
    """The edge ``task model --backbone--> row``, while the task model is kept (it may have
    been removed since the import compared them) and the edge closes no cycle."""
    from zoo.db.graph import is_ancestor

    parent = queries.find_by_content(
        session, relative.artifact.kind, relative.artifact.content_hash
    )
    if parent is None or parent.deleted_at is not None or parent.id == row.id:
        return
    if is_ancestor(session, row.id, parent.id):
        return
    queries.add_edge(
        session,
        parent_id=parent.id,
        child_id=row.id,
        relation=BACKBONE,
        recipe=relative.edge_recipe(),
        zoo_version=__version__,
        by=by,
    )


def _record_not_kept(row, ready: _Prepared) -> None:
    """Keep, in the artifact's info, what each folder it was imported from held that zoo
    did not keep (`zoo show` lists it), the newest import of each origin."""
    info = queries.loads(row.info_json) or {}
    by_origin = dict(info.get("not_kept") or {})
    if ready.not_kept:
        by_origin[ready.origin] = list(ready.not_kept)
    else:
        by_origin.pop(ready.origin, None)
    if by_origin:
        info["not_kept"] = by_origin
    else:
        info.pop("not_kept", None)
    text = queries.dumps(info)
    if text != row.info_json:
        row.info_json = text


def _existing(reg, session: Session, ready: _Prepared) -> ArtifactInfo | None:
    """The artifact already holding this content (or the checkpoint it is a
    ``save_pretrained`` copy of), with this import recorded on it."""
    # The same content registered as a derived checkpoint (a materialized folder being
    # imported) stays that one artifact, so its lineage is kept.
    hashes = [ready.content_hash, *([ready.same_as] if ready.same_as else [])]
    rows = [
        queries.find_by_content(session, kind, content_hash, for_write=True)
        for content_hash in hashes
        for kind in IMPORTABLE
    ]
    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    row = next((r for r in rows if r.deleted_at is None), rows[0])
    if row.deleted_at is not None:  # importing again brings it back
        row.deleted_at = None
        if row.kind == "derived":
            from .maintenance import removed_inputs

            # Under a parent still removed, it is derived again from that parent's blobs,
            # which gc keeps from now on: a sweep under way (it marked before this) must
            # leave them, as it leaves the blobs any writer reuses.
            for _, digest, nbytes in removed_inputs(session, [row.id]):
                reg.store.keep(digest, nbytes)
    if row.virtual:  # its weights are in the store now
        row.virtual = False
    replaced = _record(reg, session, row, ready)
    if ready.name:
        queries.also_named(session, row, ready.name, what="checkpoint", by=reg.user)
    return dataclasses.replace(queries.to_info(session, row), replaced_files=replaced)


def _create(reg, session: Session, ready: _Prepared) -> ArtifactInfo:
    name = ready.name
    clash = (
        f"The name {name!r} is already taken by other content"
        f"{queries.removed_holder_note(session, name)}; choose another name= or "
        "move it with `zoo tag`."
        if name
        else ""
    )
    try:
        free = queries.free_name(session, name, ready.default_name, ready.content_hash, clash=clash)
    except ConflictError:
        # Taken since this transaction looked for the content, perhaps by that same content
        # (an import of it under this name committed meanwhile; on PostgreSQL each
        # statement sees such commits): then the answer is that artifact.
        found = _existing(reg, session, ready)
        if found is None:
            raise
        return found
    row = queries.insert_artifact(session, **_source_columns(ready, free, reg.user))
    _record(reg, session, row, ready)
    return queries.to_info(session, row)


def _source_columns(ready: _Prepared, name: str, user: str) -> dict[str, Any]:
    """The artifact columns of an imported checkpoint named ``name``, one import's or a
    batch's alike (:func:`zoo.db.queries.artifact_values` takes them)."""
    return {
        "kind": "source",
        "name": name,
        "family": ready.family,
        "content_hash": ready.content_hash,
        "config": ready.config,
        "info": {"format": "safetensors"},
        "tensors": ready.tensors,
        "created_by": user,
        "layers": ready.layers,
        "hidden": ready.hidden,
    }


def _write_batch(reg, session: Session, chunk: list[_Prepared]) -> list[ArtifactInfo]:
    """Rows for a batch of imports in a handful of statements: new plain checkpoints get
    their artifact, tensor and import rows in three multi-row inserts; the rest (content
    already registered or twice in the batch, names all taken, files or Hub edges to
    record) go one at a time, after them."""
    from sqlalchemy import insert, select

    from zoo.db.entities import ImportInfo
    from zoo.db.models import Alias, Artifact, ArtifactTensor, ImportRecord

    hashes = {r.content_hash for r in chunk}
    known = set(
        session.scalars(
            select(Artifact.content_hash).where(
                Artifact.content_hash.in_(hashes), Artifact.kind.in_(IMPORTABLE)
            )
        )
    )
    wanted = {r.default_name for r in chunk} | {
        f"{r.default_name}-{r.content_hash[:8]}" for r in chunk
    }
    taken = set(session.scalars(select(Artifact.name).where(Artifact.name.in_(wanted))))
    taken |= set(session.scalars(select(Alias.name).where(Alias.name.in_(wanted))))
    fresh: list[tuple[int, _Prepared, str]] = []
    later: list[int] = []
    for i, r in enumerate(chunk):
        candidates = (r.default_name, f"{r.default_name}-{r.content_hash[:8]}")
        name = next((n for n in candidates if n not in taken), None)
        if r.content_hash in known or r.same_as or name is None or not r.plain:
            later.append(i)
            continue
        known.add(r.content_hash)
        taken.add(name)
        fresh.append((i, r, name))
    out: list[ArtifactInfo | None] = [None] * len(chunk)
    if fresh:
        stamp, user = queries.now(), reg.user
        # The columns and tensor rows of one import at a time (zoo.db.queries), in batches.
        made = [queries.artifact_values(**_source_columns(r, name, user)) for _, r, name in fresh]
        ids = list(
            session.scalars(
                insert(Artifact).returning(Artifact.id, sort_by_parameter_order=True),
                # One time for the batch: each row's, its import's and its record's.
                [{**values, "created_at": stamp} for values, _ in made],
            )
        )
        session.execute(
            insert(ArtifactTensor),
            [
                row
                for artifact_id, (_, tensors) in zip(ids, made, strict=True)
                for row in queries.tensor_rows(tensors, artifact_id)
            ],
        )
        session.execute(
            insert(ImportRecord),
            [
                {
                    "artifact_id": artifact_id,
                    "origin": r.origin,
                    "revision": r.commit,
                    "files_json": queries.dumps(r.files),
                    "imported_at": stamp,
                    "imported_by": user,
                }
                for artifact_id, (_, r, _) in zip(ids, fresh, strict=True)
            ],
        )
        for artifact_id, (i, r, name), (row, _) in zip(ids, fresh, made, strict=True):
            out[i] = ArtifactInfo(
                id=artifact_id,
                kind="source",
                name=name,
                family=r.family,
                content_hash=r.content_hash,
                config=r.config,
                info={"format": "safetensors"},
                virtual=False,
                created_at=stamp,
                created_by=user,
                imports=(ImportInfo(r.origin, r.commit, dict(r.files), stamp, user),),
                tensors=r.tensors,
                tensor_count=row["tensor_count"],
                nbytes=row["nbytes"],
                layers=r.layers,
                hidden=r.hidden,
            )
    for i in later:
        ready = chunk[i]
        out[i] = _existing(reg, session, ready) or _create(reg, session, ready)
    return out  # type: ignore[return-value]


def _locate(
    source: str | os.PathLike[str], revision: str | None, *, hub_only: bool = False
) -> tuple[Path, str, str]:
    """(local folder, origin for provenance, commit or ""); with ``hub_only``, only a Hub
    repository's snapshot, never a path."""
    from zoo.hub import source_text

    text = source_text(source)
    from zoo.hub import names_a_repo, not_a_source, resolve_snapshot

    if hub_only:
        if not names_a_repo(text):
            raise InvalidInputError(f"{text[:100]!r} is not a Hub repository id (ORG/NAME).")
        snap = resolve_snapshot(text, revision)
        return snap.path, f"hf://{snap.repo_id}", snap.commit
    path = Path(text).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:  # a name longer than the file system takes
        raise InvalidInputError(f"{text[:80]!r}...: {exc.strerror}.") from None
    if exists:
        if revision:
            raise InvalidInputError(
                "revision= applies to Hub repositories, not local paths.", params=["revision"]
            )
        resolved = str(path.resolve())
        if not is_utf8(resolved):  # met through a link or the current folder
            raise InvalidInputError(
                f"{resolved!a} is not UTF-8 text; zoo records the folder a checkpoint was "
                "imported from, so give it a name that is."
            )
        return path, resolved, ""
    if names_a_repo(text):
        snap = resolve_snapshot(text, revision)
        return snap.path, f"hf://{snap.repo_id}", snap.commit
    raise not_a_source(text)


def _default_name(source) -> str:
    text = os.fspath(source).rstrip("/\\")
    base = text.split("/")[-1] if "/" in text else Path(text).name
    base = Path(base).stem if base.endswith(".safetensors") else base
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "checkpoint"
    if re.fullmatch(r"[0-9a-fA-F]{8,64}", cleaned):
        # A hex folder name (an HF cache snapshot is named by its commit) would read as a
        # content-hash prefix: name it after the repository folder above, if there is one.
        repo = re.search(r"(?:models|datasets)--(?:[^/]+--)?([^/]+)/snapshots/", text)
        cleaned = f"{repo.group(1) if repo else 'checkpoint'}-{cleaned[:8]}"
    return cleaned[:100]


def search(
    reg,
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
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    limit: int | None = 50,
    after: str | None = None,
    newest_first: bool = True,
) -> Page:
    """A page of artifacts; see :meth:`zoo.Registry.search`."""
    from zoo.db.search import Filters, page

    limit, created_after, created_before = check_search(
        kind=kind,
        family=family,
        name=name,
        bounds={
            "min_layers": min_layers,
            "max_layers": max_layers,
            "min_hidden": min_hidden,
            "max_hidden": max_hidden,
        },
        derived_from=derived_from,
        created_by=created_by,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        after=after,
    )
    model_type = None
    if family:
        from zoo.families import family_filter

        family, model_type = family_filter(family)
    with reg.session() as session:
        filters = Filters(
            kind=kind,
            family=family,
            model_type=model_type,
            include_deleted=include_deleted,
            name=name or None,
            min_layers=min_layers,
            max_layers=max_layers,
            min_hidden=min_hidden,
            max_hidden=max_hidden,
            derived_from=None
            if derived_from is None
            else queries.resolve(session, derived_from, include_removed=include_deleted).id,
            created_by=created_by,
            created_after=created_after,
            created_before=created_before,
        )
        items, total, cursor = page(
            session, filters, limit=limit, after=after, newest_first=newest_first
        )
    return Page(tuple(items), total, cursor)


def list_artifacts(
    reg,
    *,
    kind: str | None = None,
    family: str | None = None,
    include_deleted: bool = False,
    **filters,
) -> list[ArtifactSummary]:
    """Every match, oldest first (one page without a limit)."""
    from zoo.api.arguments import check_list_filters

    check_list_filters(filters)
    return list(
        search(
            reg,
            kind=kind,
            family=family,
            include_deleted=include_deleted,
            limit=None,
            newest_first=False,
            **filters,
        ).items
    )


def show(reg, query: str, *, include_deleted: bool = False) -> ArtifactInfo:
    """The artifact ``query`` names, with every other artifact of the same content (a hash
    prefix names the first registration of that content); a removed one too with
    ``include_deleted``."""
    with reg.session() as session:
        row = queries.resolve(session, query, include_removed=include_deleted)
        return queries.to_info(session, row, same_content=True)


def tag(reg, query: str, alias: str) -> tuple[ArtifactInfo, str | None]:
    """Point ``alias`` at the artifact ``query`` names (moving it if it pointed elsewhere);
    returns the artifact and the name the alias held before (None for a new alias), read
    in the same transaction: with tags of one alias at once, each says what it moved."""
    from zoo.checkpoint import validate_name

    validate_name(alias, "alias")

    def work(session: Session) -> tuple[ArtifactInfo, str | None]:
        row = queries.resolve(session, query)
        written, previous = queries.point_alias(session, alias, row, reg.user)
        # Nothing written: a registry name (refused), or the alias points here already.
        if not written:
            if session.scalar(queries.IS_NAME, {"alias": alias}):
                raise ConflictError(
                    f"{alias!r} is the registry name of an artifact"
                    f"{queries.removed_holder_note(session, alias)}; an alias must be a new "
                    "name."
                )
            previous = row.name
        return queries.to_info(session, row, tensors=False), previous

    return reg.transaction(work)


def alias_history(
    reg, alias: str, *, limit: int | None = None, after: str | None = None
) -> AliasHistoryPage:
    """A page of ``alias``'s settings, newest first; see :meth:`zoo.Registry.alias_history`."""
    queries.check_lookup(alias, "alias")
    limit, last = check_history_page(limit, after)
    with reg.session() as session:
        settings = queries.alias_history(session, alias, limit=limit, after=last)
        if settings:
            return settings
        # Past the last setting, a page is empty; an alias never set is not found.
        if last is not None and queries.alias_history(session, alias, limit=1):
            return settings
        if session.scalar(queries.IS_NAME, {"alias": alias}):
            raise NotFoundError(
                f"{alias!r} is an artifact's registry name, not an alias: it has always "
                "named that artifact.",
                query=alias,
            )
    raise NotFoundError(
        f"No alias {alias!r} was ever set; `zoo show NAME` lists an artifact's aliases.",
        query=alias,
    )
