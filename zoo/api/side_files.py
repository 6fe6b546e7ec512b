"""The files around a checkpoint's weights, as zoo hands them on to what it derives.

A learngene or a derived checkpoint has the vocabulary of its source (zoo never resizes
one), so an ``--out`` folder carries the source's tokenizer, generation and processor
configs, chat template, license files, the code its ``auto_map`` names and its
sentence-transformers pipeline as they were imported (the pooling module told the
output's width), and its model card inherits the source's license. The files are found on
the artifact itself or, up zoo's own derivation edges (extract, materialize), on the
nearest ancestor that has some (through a ``backbone`` edge too: a task model's base
model saved on its own holds its embedding byte for byte, so its vocabulary, and is under
its license); declared links (finetune, a card's base_model) are not followed, since such
a model may have a tokenizer of its own.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, FileRecord
from zoo.db.models import Artifact, ArtifactFile, Edge
from zoo.errors import InvalidInputError

#: A sentence-transformers pooling module's input width, as versions up to 5 and from 6
#: name it in its config.json.
POOLING_WIDTH = ("word_embedding_dimension", "embedding_dimension")

#: Edges along which the vocabulary, so the tokenizer, is unchanged.
SAME_VOCABULARY = ("extract", "materialize", "backbone")

_CHUNK = 500  # ids in one IN (...) list


def _nearest_first(start: int, parents: Callable[[int], Iterable[int]]) -> Iterator[int]:
    """``start``, then its ancestors up the edges ``parents`` gives (those along which the
    vocabulary is unchanged, in the order they were recorded), breadth first."""
    todo, seen = deque([start]), {start}
    while todo:
        node = todo.popleft()
        yield node
        for parent in parents(node):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)


def _up(reg, info: ArtifactInfo, found):
    """The first non-empty ``found(session, artifact id)`` from ``info`` up zoo's own
    edges, breadth first; None if none."""
    with reg.session() as session:

        def parents(node: int) -> list[int]:
            edges = queries.edges(session, child_id=node)
            return [e.parent_id for e in edges if e.relation in SAME_VOCABULARY]

        for node in _nearest_first(info.id, parents):
            got = found(session, node)
            if got:
                return got
    return None


def files_of(reg, info: ArtifactInfo) -> tuple[FileRecord, ...]:
    """The files stored with ``info`` or its nearest ancestor through zoo's own edges."""
    if info.files:
        return info.files
    return _up(reg, info, lambda session, node: tuple(queries.file_records(session, node))) or ()


def files_config(reg, info: ArtifactInfo) -> dict[str, Any] | None:
    """The config of the artifact whose files :func:`files_of` gives ``info``: its own, or
    its nearest ancestor's that stores some. A checkpoint derived from a derived one
    carries its source's pipeline, whose pooling width is that source's, not its parent's."""
    if info.files:
        return info.config

    def owner_config(session: Session, node: int):
        if not queries.file_records(session, node):
            return None
        text = session.get(Artifact, node).config_json
        return json.loads(text) if text else {}

    return _up(reg, info, owner_config)


@dataclass(frozen=True)
class Inherited:
    """The files an artifact storing none of its own takes from ``owner``, its nearest
    ancestor that stores some (see :func:`files_of`)."""

    owner: int
    files: tuple[FileRecord, ...]


def inherited_files(session: Session, artifact_ids: Iterable[int]) -> dict[int, Inherited]:
    """Heir id -> what :func:`files_of` gives it from an ancestor, for each of
    ``artifact_ids`` that stores no files of its own and has such an ancestor. Those blobs
    are the heir's as much as the owner's: its folders are written with them, even once
    the owner is removed (a task model removed, its base model saved alone kept). The
    edges and who stores files are read once, for any number of ids."""
    up: dict[int, list[int]] = {}
    for child, parent in session.execute(
        select(Edge.child_id, Edge.parent_id)
        .where(Edge.relation.in_(SAME_VOCABULARY))
        .order_by(Edge.id)
    ):
        up.setdefault(child, []).append(parent)
    storing = set(session.scalars(select(ArtifactFile.artifact_id).distinct()))
    owner_of: dict[int, int] = {}
    for heir in artifact_ids:
        if heir not in storing:
            ancestry = _nearest_first(heir, lambda node: up.get(node, ()))
            owner = next((node for node in ancestry if node in storing), None)
            if owner is not None:
                owner_of[heir] = owner
    files: dict[int, list[FileRecord]] = {}
    owners = sorted(set(owner_of.values()))
    for start in range(0, len(owners), _CHUNK):
        for owner, name, role, nbytes, digest in session.execute(
            select(
                ArtifactFile.artifact_id,
                ArtifactFile.name,
                ArtifactFile.role,
                ArtifactFile.nbytes,
                ArtifactFile.digest,
            )
            .where(ArtifactFile.artifact_id.in_(owners[start : start + _CHUNK]))
            .order_by(ArtifactFile.artifact_id, ArtifactFile.name)
        ):
            files.setdefault(owner, []).append(FileRecord(name, role, nbytes, digest))
    return {heir: Inherited(owner, tuple(files.get(owner, ()))) for heir, owner in owner_of.items()}


def out_files(reg, source: ArtifactInfo) -> dict[str, bytes]:
    """File name -> bytes for a folder of a model derived from ``source``: every stored
    file but the model card, for which zoo writes its own (:mod:`zoo.api.cards`). Each
    blob is verified as it is read."""
    return {f.name: reg.store.get(f.digest) for f in files_of(reg, source) if f.role != "card"}


def fit_to_width(files: Mapping[str, bytes], source_hidden, target_hidden) -> dict[str, bytes]:
    """``files`` for a model of hidden size ``target_hidden`` derived from one of
    ``source_hidden``: a sentence-transformers pooling module's width
    (``1_Pooling/config.json``: ``word_embedding_dimension``, or ``embedding_dimension`` as
    sentence-transformers 6 writes it) follows the width, so ``SentenceTransformer``
    builds a pipeline that fits the weights and reports its width; a Dense module (a
    projection of the pooled embedding: LaBSE's, distiluse's), whose weights take the
    source's width, is left out of the pipeline, files and all (:func:`dense_modules`);
    every other file, and every file at the source's own width, is unchanged, byte for
    byte."""
    from zoo.checkpoint.side_files import module_folders

    out = dict(files)
    if source_hidden == target_hidden or target_hidden is None:
        return out
    dense = dense_modules(files)
    if dense:
        modules = json.loads(files["modules.json"])
        kept = [m for m in modules if not set(module_folders([m])) & set(dense)]
        out["modules.json"] = (json.dumps(kept, indent=2) + "\n").encode("utf-8")
        for name in files:
            if any(name.startswith(f"{folder}/") for folder in dense):
                del out[name]
    for folder in module_folders(out.get("modules.json")):
        name = f"{folder}/config.json"
        try:
            config = json.loads(files[name])
        except (KeyError, ValueError):
            continue
        if not isinstance(config, dict):
            continue
        keys = [k for k in POOLING_WIDTH if config.get(k) == source_hidden]
        if keys:
            config.update(dict.fromkeys(keys, target_hidden))
            out[name] = (json.dumps(config, indent=2) + "\n").encode("utf-8")
    return out


def dense_modules(files: Mapping[str, bytes]) -> list[str]:
    """The folders of the sentence-transformers Dense modules (a config.json with
    ``in_features`` and ``out_features``) that ``files``' modules.json names. Their
    weights take the pooled embedding's width: zoo resizes the transformer's weights, not
    a module's, so a narrower or wider output cannot keep them."""
    from zoo.checkpoint.side_files import module_folders

    found = []
    for folder in module_folders(files.get("modules.json")):
        try:
            config = json.loads(files[f"{folder}/config.json"])
        except (KeyError, ValueError):
            continue
        if isinstance(config, dict) and {"in_features", "out_features"} <= set(config):
            found.append(folder)
    return found


def check_code(name: str, config, files) -> None:
    """Refuse a folder whose config.json would name, in its ``auto_map``, code the folder
    lacks (the checkpoint was registered from a folder or cache without it): transformers
    could not load it with ``trust_remote_code``.

    Raises:
        InvalidInputError: naming the missing files and how to keep them.
    """
    from zoo.checkpoint.side_files import missing_code

    missing = missing_code(config, files)
    if missing:
        raise InvalidInputError(
            f"{name}'s config.json names code in its auto_map that zoo does not hold "
            f"({', '.join(missing)}), so the folder would not load with trust_remote_code; "
            "import its folder or repository again with that code (zoo keeps it), then "
            "write the folder."
        )


@dataclass(frozen=True)
class SourceCard:
    """What a derived card says of its source: the source's own card (its front matter
    ``meta`` and whole ``text``, None without one) and ``bases``, the Hub repositories
    the source's weights came from."""

    meta: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    bases: tuple[str, ...] = ()


def source_card_of(reg, source: ArtifactInfo) -> SourceCard:
    """The card a derived card builds on (see :class:`SourceCard`). ``bases`` is the Hub
    repository the source, or the nearest ancestor through zoo's own edges, was imported
    from (``hf://ORG/NAME``); else, where the source's card is one zoo wrote for a folder
    it derived, the ``base_model`` it names (chosen by this same rule); else none: a
    checkpoint imported from a folder has no Hub id zoo could name, and the base a model's
    own card names is the model it was made from, not the model itself."""
    from zoo.checkpoint.side_files import base_models, card_metadata

    from .cards import DERIVED_TAGS

    card = next((f for f in files_of(reg, source) if f.role == "card"), None)
    text = reg.store.get(card.digest).decode("utf-8", "replace") if card else None
    meta = card_metadata(text) if text else {}
    hub = _up(reg, source, _hub_repo)
    if hub:
        bases = (hub,)
    else:
        tags = meta.get("tags")
        zoo_card = isinstance(tags, list) and set(DERIVED_TAGS) <= set(map(str, tags))
        bases = tuple(base_models(meta)[0]) if zoo_card else ()
    return SourceCard(meta, text, bases)


def _hub_repo(session, artifact_id: int) -> str | None:
    """The Hub repository ``artifact_id`` was imported from last, if any."""
    from zoo.db.models import ImportRecord

    origin = session.scalar(
        select(ImportRecord.origin)
        .where(ImportRecord.artifact_id == artifact_id, ImportRecord.origin.like("hf://%"))
        .order_by(ImportRecord.imported_at.desc(), ImportRecord.id.desc())
        .limit(1)
    )
    return origin[len("hf://") :] if origin else None


def card_metadata_of(reg, source: ArtifactInfo) -> dict[str, Any]:
    """The front matter of the model card stored with ``source`` (``{}`` without one)."""
    from zoo.checkpoint.side_files import card_metadata

    card = next((f for f in files_of(reg, source) if f.role == "card"), None)
    if card is None:
        return {}
    return card_metadata(reg.store.get(card.digest).decode("utf-8", "replace"))
