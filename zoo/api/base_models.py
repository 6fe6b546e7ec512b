"""Lineage from the Hub's own records: a model card's ``base_model``.

A checkpoint's model card may name the models it was made from (``base_model``, and
``base_model_relation``: adapter, merge, quantized or finetune); the Hub draws its model
tree from them. At import zoo records the same edges, so its graph and the Hub's agree:
from the registered artifact imported from that repository when there is one, else from a
*placeholder*, an artifact of kind ``placeholder`` named by the repository id that holds
no content. Importing the repository later turns the placeholder into the real artifact:
its edges move over and the placeholder is forgotten.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.models import Alias, Artifact, Edge
from zoo.db.queries import placeholder_hash

from .lineage import is_ancestor

#: What a base_model edge's recipe says: declared by the card, not derived by zoo.
CARD_RECIPE = {"declared": True, "note": "base_model in the model card"}


def record_base_models(
    session: Session, row: Artifact, repos: list, relation: str, *, by: str
) -> None:
    """Edges from each base in ``repos`` to ``row``, skipping any that would close a cycle
    or that zoo's own lineage already holds (a materialized folder whose card names its
    source). A base is a repository id, or ``("content", HASH)``: the checkpoint of that
    content if the registry holds one (the source a card zoo wrote names), else none."""
    parents = [
        session.get(Artifact, edge.parent_id)
        for edge in session.scalars(select(Edge).where(Edge.child_id == row.id))
    ]
    for repo in repos:
        if any(_answers_to(session, parent, repo) for parent in parents):
            continue  # its edge is there already, from a base kept or removed since
        if isinstance(repo, tuple):
            base = _holding(session, repo[1])
            if base is None:
                continue
        else:
            base = _registered(session, repo) or _placeholder(session, repo, by=by)
        if base.id == row.id or is_ancestor(session, base.id, row.id):
            continue
        if is_ancestor(session, row.id, base.id):
            continue
        queries.add_edge(
            session,
            parent_id=base.id,
            child_id=row.id,
            relation=relation,
            recipe=CARD_RECIPE,
            zoo_version=__version__,
            by=by,
        )


def drop_stale_card_edges(
    session: Session, row: Artifact, repos: list, relation: str, *, by: str
) -> None:
    """Remove the edges into ``row`` that a model card declared (:data:`CARD_RECIPE`) from
    a base the card now in effect no longer names (``repos``), or under another relation;
    a placeholder left with no edge and no alias goes too (it exists only to anchor such
    edges; one with an alias stays for `zoo gc`, which keeps the alias's history)."""
    for edge in session.scalars(select(Edge).where(Edge.child_id == row.id)).all():
        recipe = queries.loads(edge.recipe_json) or {}
        if not isinstance(recipe, dict) or recipe.get("note") != CARD_RECIPE["note"]:
            continue
        parent = session.get(Artifact, edge.parent_id)
        named = any(_answers_to(session, parent, repo) for repo in repos)
        if named and edge.relation == relation:
            continue
        session.delete(edge)
        session.flush()
        if parent.kind == "placeholder" and not _in_use(session, parent.id):
            session.delete(parent)
    session.flush()


def _in_use(session: Session, artifact_id: int) -> bool:
    """Whether an edge or an alias names ``artifact_id``."""
    edge = session.scalar(
        select(Edge.id)
        .where((Edge.parent_id == artifact_id) | (Edge.child_id == artifact_id))
        .limit(1)
    )
    alias = session.scalar(select(Alias.name).where(Alias.artifact_id == artifact_id).limit(1))
    return edge is not None or alias is not None


def _holding(session: Session, content_hash: str) -> Artifact | None:
    """The kept checkpoint (a source, else a derived one) of this content, if any."""
    for kind in ("source", "derived"):
        row = queries.find_by_content(session, kind, content_hash)
        if row is not None and row.deleted_at is None:
            return row
    return None


def adopt_placeholder(session: Session, row: Artifact, repo_id: str, by: str) -> None:
    """``row`` was imported from ``repo_id``: a placeholder for it hands over its edges
    and aliases (each move kept in the alias's history), then is forgotten."""
    ph = queries.find_by_content(session, "placeholder", placeholder_hash(repo_id))
    if ph is None or ph.id == row.id:
        return
    for edge in session.scalars(select(Edge).where(Edge.parent_id == ph.id)).all():
        taken = _edge_exists(session, row.id, edge.child_id, edge.relation)
        if taken or edge.child_id == row.id or is_ancestor(session, edge.child_id, row.id):
            session.delete(edge)
        else:
            edge.parent_id = row.id
    for edge in session.scalars(select(Edge).where(Edge.child_id == ph.id)).all():
        taken = _edge_exists(session, edge.parent_id, row.id, edge.relation)
        if taken or edge.parent_id == row.id or is_ancestor(session, row.id, edge.parent_id):
            session.delete(edge)
        else:
            edge.child_id = row.id
    session.flush()
    moved = session.scalars(
        update(Alias)
        .where(Alias.artifact_id == ph.id)
        .values(artifact_id=row.id)
        .returning(Alias.name)
    ).all()
    for alias in moved:
        queries.record_alias_setting(session, alias, row, queries.now(), by)
    session.execute(delete(Artifact).where(Artifact.id == ph.id))
    session.flush()


def _edge_exists(session: Session, parent_id: int, child_id: int, relation: str) -> bool:
    return (
        session.scalar(
            select(Edge.id).where(
                Edge.parent_id == parent_id, Edge.child_id == child_id, Edge.relation == relation
            )
        )
        is not None
    )


def _answers_to(session: Session, row: Artifact, repo: str) -> bool:
    """Whether ``row``, kept or removed, is what the base ``repo`` named when it was
    linked: its placeholder, an import from that Hub repository, or (an id without an
    organization) the artifact with that name or alias."""
    from zoo.db.models import ImportRecord

    if isinstance(repo, tuple):  # ("content", HASH)
        return row.content_hash == repo[1]
    if row.content_hash == placeholder_hash(repo):
        return True
    imported = session.scalar(
        select(ImportRecord.id).where(
            ImportRecord.artifact_id == row.id, ImportRecord.origin == f"hf://{repo}"
        )
    )
    if imported is not None:
        return True
    if "/" in repo:
        return False
    aliased = session.scalar(
        select(Alias.artifact_id).where(Alias.artifact_id == row.id, Alias.name == repo)
    )
    return row.name == repo or aliased is not None


def _registered(session: Session, repo: str) -> Artifact | None:
    """The kept artifact imported last from the Hub repository ``repo``, as the repository
    id names it everywhere; for an id without an organization, else the artifact with that
    registry name or alias (the card of a folder zoo materialized from a source imported
    from a folder names its base so)."""
    row = queries.hub_import(session, repo)
    if row is None and "/" not in repo:
        row = queries.alias_target(session, repo) or session.scalar(
            select(Artifact).where(Artifact.name == repo)
        )
        if row is not None and (row.deleted_at is not None or row.kind == "placeholder"):
            row = None
    return row


def _placeholder(session: Session, repo: str, *, by: str) -> Artifact:
    """The placeholder for ``repo``, created when missing. Named by the repository id; a
    legacy id without an organization (``gpt2``) is prefixed ``hf:``, so it can never take
    a registry name or a family's name (neither may hold ``/`` or ``:``)."""
    content_hash = placeholder_hash(repo)
    row = queries.find_by_content(session, "placeholder", content_hash, for_write=True)
    if row is not None:
        if row.deleted_at is not None:
            row.deleted_at = None
        return row
    name = repo if "/" in repo else f"hf:{repo}"
    if queries.name_taken(session, name):
        name = f"{name}-{content_hash[:8]}"
    return queries.insert_artifact(
        session,
        kind="placeholder",
        name=name,
        family=None,
        content_hash=content_hash,
        config=None,
        info={"repo_id": repo, "origin": f"hf://{repo}"},
        tensors=(),
        created_by=by,
    )
