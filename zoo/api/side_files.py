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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, FileRecord
from zoo.errors import InvalidInputError

#: A sentence-transformers pooling module's input width, as versions up to 5 and from 6
#: name it in its config.json.
POOLING_WIDTH = ("word_embedding_dimension", "embedding_dimension")

#: Edges along which the vocabulary, so the tokenizer, is unchanged.
SAME_VOCABULARY = ("extract", "materialize", "backbone")


def _up(reg, info: ArtifactInfo, found):
    """The first non-empty ``found(session, artifact id)`` from ``info`` up zoo's own
    edges, breadth first; None if none."""
    with reg.session() as session:
        todo, seen = deque([info.id]), {info.id}
        while todo:
            node = todo.popleft()
            got = found(session, node)
            if got:
                return got
            for edge in queries.edges(session, child_id=node):
                if edge.relation in SAME_VOCABULARY and edge.parent_id not in seen:
                    seen.add(edge.parent_id)
                    todo.append(edge.parent_id)
    return None


def files_of(reg, info: ArtifactInfo) -> tuple[FileRecord, ...]:
    """The files stored with ``info`` or its nearest ancestor through zoo's own edges."""
    if info.files:
        return info.files
    return _up(reg, info, lambda session, node: tuple(queries.file_records(session, node))) or ()


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
    builds a pipeline that fits the weights and reports its width; every other file, and
    every file at the source's own width, is unchanged, byte for byte."""
    from zoo.checkpoint.side_files import module_folders

    out = dict(files)
    if source_hidden == target_hidden or target_hidden is None:
        return out
    for folder in module_folders(files.get("modules.json")):
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
    from sqlalchemy import select

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
