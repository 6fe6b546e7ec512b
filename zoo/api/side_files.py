"""The files around a checkpoint's weights, as zoo hands them on to what it derives.

A learngene or a derived checkpoint has the vocabulary of its source (zoo never resizes
one), so an ``--out`` folder carries the source's tokenizer, generation and processor
configs and chat template as they were imported, and its model card inherits the
source's license. The files are found on the artifact itself or, up zoo's own derivation
edges (extract, materialize), on the nearest ancestor that has some; declared links
(finetune, a card's base_model) are not followed, since such a model may have a tokenizer
of its own.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, FileRecord

#: Edges along which the vocabulary, so the tokenizer, is unchanged.
SAME_VOCABULARY = ("extract", "materialize")


def files_of(reg, info: ArtifactInfo) -> tuple[FileRecord, ...]:
    """The files stored with ``info`` or its nearest ancestor through zoo's own edges."""
    if info.files:
        return info.files
    with reg.session() as session:
        todo, seen = deque([info.id]), {info.id}
        while todo:
            node = todo.popleft()
            files = queries.file_records(session, node)
            if files:
                return tuple(files)
            for edge in queries.edges(session, child_id=node):
                if edge.relation in SAME_VOCABULARY and edge.parent_id not in seen:
                    seen.add(edge.parent_id)
                    todo.append(edge.parent_id)
    return ()


def out_files(reg, source: ArtifactInfo) -> dict[str, bytes]:
    """File name -> bytes for a folder of a model derived from ``source``: every stored
    file but the model card, for which zoo writes its own (:mod:`zoo.api.cards`). Each
    blob is verified as it is read."""
    return {f.name: reg.store.get(f.digest) for f in files_of(reg, source) if f.role != "card"}


def card_metadata_of(reg, source: ArtifactInfo) -> dict[str, Any]:
    """The front matter of the model card stored with ``source`` (``{}`` without one)."""
    from zoo.checkpoint.side_files import card_metadata

    card = next((f for f in files_of(reg, source) if f.role == "card"), None)
    if card is None:
        return {}
    return card_metadata(reg.store.get(card.digest).decode("utf-8", "replace"))
