"""Registering checkpoints and finding them again: import, list, show, tag, defaults.

Any checkpoint in Hugging Face layout is catalogued: one whose ``model_type`` no family
resizes is a source with no family (stored, listed, audited, verified and collected like
any other; ``extract`` and ``materialize`` refuse it). Import also stores the files around
the weights (zoo.checkpoint.side_files) and the ``base_model`` edges of its model card
(zoo.api.base_models).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from sqlalchemy.orm import Session

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, FileRecord, TensorRecord
from zoo.errors import (
    ConfigMismatchError,
    ConflictError,
    InvalidCheckpointError,
    InvalidInputError,
    UnknownFamilyError,
)
from zoo.progress import progress_bar

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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
            f"as its base; import it first (`zoo import {repo}`)."
        )
    model_type = (info.config or {}).get("model_type")
    what = f"a {model_type!r} checkpoint" if model_type else "a checkpoint without a model_type"
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
) -> ArtifactInfo:
    """Register a Hugging Face checkpoint; see :meth:`zoo.Registry.import_checkpoint`."""
    from zoo.checkpoint import open_checkpoint, validate_name
    from zoo.checkpoint.side_files import base_models, card_metadata, find_side_files

    from .base_models import adopt_placeholder, record_base_models

    if name is not None:
        validate_name(name)
    path, origin, commit = _locate(source, revision)
    with open_checkpoint(path, allow_bin=convert_bin) as ckpt:
        if ckpt.config is None:
            raise InvalidCheckpointError(
                f"{path} is a bare .safetensors file; import needs a folder with config.json.",
                path=str(path),
            )
        family = family_name(ckpt.config)
        if family is not None:
            _check_layout(family, ckpt)
        from zoo.checkpoint import manifest_hash

        content_hash = manifest_hash(ckpt.config, ckpt.tensors)
        tensors = [
            TensorRecord(t.name, t.dtype, tuple(t.shape), t.nbytes, t.digest) for t in ckpt.tensors
        ]
        reg.check_writable()  # a read-only registry: refused before any blob is written
        with reg.session() as session:
            known = any(queries.find_by_content(session, k, content_hash) for k in IMPORTABLE)
        # Blobs first, rows second: a crash in between leaves collectable orphans only.
        total = sum(t.nbytes for t in tensors)
        with progress_bar(total, f"import {Path(path).name}", enabled=progress) as bar:
            for t in tensors:
                read = functools.partial(ckpt.read_bytes, t.name)
                if known and not reg.store.verify(t.digest):
                    # Importing a registered checkpoint again restores its damaged blobs.
                    reg.store.rewrite(t.digest, read())
                # Not has-then-put: a reused blob gets a fresh time so gc leaves it alone.
                reg.store.put_if_absent(t.digest, read)
                bar.update(t.nbytes)
        side = find_side_files(ckpt.root)
        for f in side:
            reg.store.put_if_absent(f.digest, functools.partial(bytes, f.data))
        files = {**ckpt.files, **{f.name: f.digest for f in side}}
        config = ckpt.config
    side_records = [FileRecord(f.name, f.role, f.nbytes, f.digest) for f in side]
    card = next((f for f in side if f.role == "card"), None)
    bases, relation = base_models(
        card_metadata(card.data.decode("utf-8", "replace")) if card else {}
    )

    def record(session: Session, row) -> None:
        """What an import adds besides the row: its files, the import, the Hub's edges."""
        queries.add_import(session, row, origin=origin, revision=commit, files=files, by=reg.user)
        if side_records:  # the newest import that brought files defines them
            queries.set_files(session, row, side_records)
        if origin.startswith("hf://"):
            adopt_placeholder(session, row, origin[len("hf://") :])
        if row.kind == "source":  # a derived one's lineage is zoo's own
            record_base_models(session, row, bases, relation, by=reg.user)

    default_name = _default_name(source if commit else path)

    def find_existing(session: Session):
        # The same content registered as a derived checkpoint (a materialized folder being
        # imported) stays that one artifact, so its lineage is kept.
        rows = [queries.find_by_content(session, kind, content_hash) for kind in IMPORTABLE]
        rows = [r for r in rows if r is not None]
        if not rows:
            return None
        row = next((r for r in rows if r.deleted_at is None), rows[0])
        if row.deleted_at is not None:  # importing again brings it back
            row.deleted_at = None
        if row.virtual:  # its weights are in the store now
            row.virtual = False
        record(session, row)
        if name and name != row.name:
            owner = queries.alias_target(session, name)
            if owner is None and not queries.name_taken(session, name):
                queries.add_alias(session, name, row)
            elif owner is None or owner.id != row.id:
                raise ConflictError(
                    f"{name!r} already names another artifact; this checkpoint is "
                    f"registered as {row.name!r}."
                )
        return queries.to_info(session, row)

    def create(session: Session) -> ArtifactInfo:
        clash = (
            f"The name {name!r} is already taken by other content"
            f"{queries.removed_holder_note(session, name)}; choose another --name or "
            "move it with `zoo tag`."
            if name
            else ""
        )
        row = queries.insert_artifact(
            session,
            kind="source",
            name=queries.free_name(session, name, default_name, content_hash, clash=clash),
            family=family,
            content_hash=content_hash,
            config=config,
            info={"format": "safetensors"},
            tensors=tensors,
            created_by=reg.user,
        )
        record(session, row)
        return queries.to_info(session, row)

    return reg.get_or_create(find_existing, create)


def _locate(source: str | os.PathLike[str], revision: str | None) -> tuple[Path, str, str]:
    """(local folder, origin for provenance, commit or "")."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        if revision:
            raise InvalidInputError("--revision applies to Hub repositories, not local paths.")
        return path, str(path.resolve()), ""
    if _REPO_ID.fullmatch(text) and not text.startswith((".", "/")):
        from zoo.hub import resolve_snapshot

        snap = resolve_snapshot(text, revision)
        return snap.path, f"hf://{snap.repo_id}", snap.commit
    raise InvalidCheckpointError(
        f"{text} is neither an existing folder nor a Hub repository id (ORG/NAME).", path=text
    )


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


def list_artifacts(
    reg, *, kind: str | None = None, family: str | None = None, include_deleted: bool = False
) -> list[ArtifactInfo]:
    if kind is not None and kind not in queries.KINDS:
        raise InvalidInputError(f"Unknown kind {kind!r}; choose one of {', '.join(queries.KINDS)}.")
    with reg.session() as session:
        rows = queries.list_artifacts(
            session, kind=kind, family=family, include_deleted=include_deleted
        )
        return [queries.to_info(session, r, tensors=True) for r in rows]


def show(reg, query: str) -> ArtifactInfo:
    """The artifact ``query`` names, with every other artifact of the same content (a hash
    prefix names the first registration of that content)."""
    with reg.session() as session:
        return queries.to_info(session, queries.resolve(session, query), same_content=True)


def tag(reg, query: str, alias: str) -> ArtifactInfo:
    """Point ``alias`` at the artifact ``query`` names (moving it if it pointed elsewhere)."""
    from zoo.checkpoint import validate_name

    validate_name(alias, "alias")

    def work(session: Session) -> ArtifactInfo:
        row = queries.resolve(session, query)
        from sqlalchemy import select

        from zoo.db.models import Alias, Artifact

        if session.scalar(select(Artifact.id).where(Artifact.name == alias)) is not None:
            raise ConflictError(
                f"{alias!r} is the registry name of an artifact"
                f"{queries.removed_holder_note(session, alias)}; an alias must be a new name."
            )
        existing = session.get(Alias, alias)
        if existing is None:
            queries.add_alias(session, alias, row)
        else:
            existing.artifact_id = row.id
            session.flush()
        return queries.to_info(session, row)

    return reg.transaction(work)
