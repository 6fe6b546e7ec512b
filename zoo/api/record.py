"""Recording a derived checkpoint: its row, its tensors' records and its lineage edge.

A derived checkpoint is identified by content (its manifest hash); the same request, or
another recipe that gives the same tensors, finds the existing row. Its name is decided
before anything is written (:func:`derived_name`), because the output folder's metadata
carries it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.entities import ArtifactInfo, TensorRecord

from .plan import Plan


def derived_name(reg, plan: Plan, content_hash: str) -> str:
    """The name the derived checkpoint has, or will have once recorded: an existing
    artifact's with the same content keeps its own."""
    with reg.session() as session:
        row = queries.find_by_content(session, "derived", content_hash)
        if row is not None:
            return row.name
        return _free_name(session, plan, content_hash)


def recorded_method(reg, content_hash: str, parent_id: int) -> tuple[str | None, str | None]:
    """The method of the derived checkpoint already recorded with this content, if any
    (another method may give the same weights: a model card says which one it names),
    and that of the materialize edge ``parent_id`` already has into it: lineage keeps
    one edge a parent, so a later recipe from the same parent is not recorded."""
    with reg.session() as session:
        row = queries.find_by_content(session, "derived", content_hash)
        if row is None:
            return None, None
        recipe = queries.to_info(session, row, tensors=False).info.get("recipe") or {}
        key = {"parent_id": parent_id, "child_id": row.id, "relation": "materialize"}
        edge = queries.existing_edge(session, key)
    from_parent = json.loads(edge.recipe_json).get("method") if edge is not None else None
    return recipe.get("method"), from_parent


def _new_name(plan: Plan, content_hash: str, digits: int = 8) -> str:
    sizes = plan.target_sizes
    recipe = plan.recipe
    label = recipe.method + (f"-{recipe.wavelet}" if recipe.wavelet else "")
    short = content_hash[:digits]
    return f"{plan.source.family}-l{sizes['layers']}-h{sizes['hidden']}-{label}-{short}"


def _free_name(session: Session, plan: Plan, content_hash: str) -> str:
    """:func:`_new_name`, with 16 digits of the hash where another artifact or an alias
    has the 8-digit one (a name given by hand), then all of them, then a number after
    them: a record is never refused for its name (its --out folder is written first)."""
    for digits in (8, 16, len(content_hash)):
        name = _new_name(plan, content_hash, digits)
        if not queries.name_taken(session, name):
            return name
    number = 2
    while queries.name_taken(session, f"{name}-{number}"):
        number += 1
    return f"{name}-{number}"


def record_derived(
    reg, plan: Plan, records: list[TensorRecord], content_hash: str, dev, *, store: bool
) -> ArtifactInfo:
    """Register the derived checkpoint (virtual unless ``store``) and its edge; a row with
    the same content is reused (brought back if removed, kept if now stored)."""
    recipe = edge_recipe(plan, dev)
    by = reg.user
    columns = {
        "kind": "derived",
        "name": _new_name(plan, content_hash),
        "family": plan.source.family,
        "content_hash": content_hash,
        "config": plan.target_config,
        "info": {"recipe": recipe, "target": plan.target_sizes},
        "tensors": records,
        "created_by": by,
        "virtual": not store,
        "layers": plan.target_sizes.get("layers"),
        "hidden": plan.target_sizes.get("hidden"),
    }
    new = _record_new(reg, plan, columns, recipe)
    if new is not None:
        return new

    def link(session: Session, row, *, new: bool = False) -> ArtifactInfo:
        from zoo.db.graph import is_ancestor

        parent_id = plan.parent.id
        # An identity recipe can give back the parent itself, or one of its ancestors (an
        # imported copy of a derived folder): the result is that artifact, with no edge
        # that would close a cycle. A row just inserted has no edges yet.
        if row.id != parent_id and (new or not is_ancestor(session, row.id, parent_id)):
            queries.add_edge(
                session,
                parent_id=parent_id,
                child_id=row.id,
                relation="materialize",
                recipe=recipe,
                zoo_version=__version__,
                by=by,
            )
        # Same content hash, same tensor records: no need to read them back; nor, for a
        # row just inserted, its aliases, imports and files (it has none).
        info_of = queries.new_info if new else queries.to_info
        return dataclasses.replace(info_of(session, row, tensors=False), tensors=tuple(records))

    def find(session: Session):
        # The parent first, then the row: `zoo rm --cascade` locks them in that order.
        # create runs after find in the same transaction: the parent is locked already.
        live, held = queries.live_and_held(session, plan.parent.id, "derived", content_hash)
        if not live:
            raise _parent_removed(plan)
        if not held:  # new content: nothing more to read
            return None
        row = queries.find_by_content(session, "derived", content_hash, for_write=True)
        if row is None:
            return None
        if row.deleted_at is not None:
            row.deleted_at = None
            # Its blobs may have been swept since: only --store has just written them.
            row.virtual = not store
        elif store and row.virtual:
            row.virtual = False
        return link(session, row)

    def create(session: Session) -> ArtifactInfo:
        named = {**columns, "name": _free_name(session, plan, content_hash)}
        return link(session, queries.inserted_artifact(session, **named), new=True)

    return reg.get_or_create(find, create)


def _record_new(reg, plan: Plan, columns: dict[str, Any], recipe: dict) -> ArtifactInfo | None:
    """The common case, new content under a kept parent, written in one round trip
    (:mod:`zoo.db.derived_rows`); None when that path wrote nothing and the general one
    decides (the content recorded already, its name taken, a race, a busy or failing
    database)."""
    from zoo.db import derived_rows

    values, records = queries.artifact_values(**columns)
    edge = queries.edge_values(
        plan.parent.id, None, "materialize", recipe, __version__, columns["created_by"]
    )
    outcome, new_id = reg.driver_write(
        lambda engine: derived_rows.insert_derived(
            engine, plan.parent.id, values, queries.tensor_rows(records), edge
        )
    )
    if outcome is derived_rows.Outcome.PARENT_REMOVED:
        raise _parent_removed(plan)
    if outcome is not derived_rows.Outcome.INSERTED:
        return None
    return queries.inserted_info(new_id, values, records)


def parent_live(session: Session, plan: Plan, *, lock: bool = False) -> None:
    """Refuse to record what was made from a parent removed (`zoo rm`) or forgotten
    (`zoo gc`) while it was derived: its row would hang under a removed artifact, or its
    edge point at none. ``lock``: the row is held until the caller's transaction ends,
    so an `rm` waits for the record and then sees the child it must keep."""
    if not queries.is_live(session, plan.parent.id, lock=lock):
        raise _parent_removed(plan)


def _parent_removed(plan: Plan):
    from zoo.errors import ConflictError

    return ConflictError(
        f"{plan.parent.name} was removed while this materialization ran; nothing was "
        "recorded (materialize it again from what is kept)."
    )


def edge_recipe(plan: Plan, dev) -> dict[str, Any]:
    """What the lineage edge records: the recipe, the device (on the CPU, its model and
    instruction set) and transform version whose bits it gives, the inputs' content
    hashes and the target config."""
    from zoo._machine import cpu
    from zoo.derive import DTYPE_VERSION
    from zoo.methods.amplitude import AMPLITUDE_VERSION
    from zoo.methods.hypercloning import HYPERCLONING, HYPERCLONING_VERSION
    from zoo.methods.net2net import NET2NET, NET2NET_VERSION
    from zoo.transforms import TRANSFORM_VERSION

    recipe = {
        **plan.recipe.to_json(),
        "device": dev.type,
        "transform_version": TRANSFORM_VERSION,
        "amplitude_version": AMPLITUDE_VERSION,
        "source": plan.source.content_hash,
        "learngene": plan.learngene.content_hash if plan.learngene else None,
        "target_config": plan.target_config,
    }
    if plan.recipe.method == NET2NET.name:
        recipe["net2net_version"] = NET2NET_VERSION
    if plan.recipe.method == HYPERCLONING.name:
        recipe["hypercloning_version"] = HYPERCLONING_VERSION
    if plan.recipe.dtype != "auto":
        recipe["dtype_version"] = DTYPE_VERSION
    if dev.type == "cpu":
        recipe["cpu"] = cpu()
    return recipe


def provenance(plan: Plan, name: str, content_hash: str) -> dict[str, str]:
    """safetensors metadata (string -> string): lineage as JSON strings."""
    return {
        "format": "pt",
        "zoo.derived": json.dumps({"name": name, "content_hash": content_hash}),
        "zoo.source": json.dumps(
            {"name": plan.source.name, "content_hash": plan.source.content_hash}
        ),
        "zoo.learngene": json.dumps(
            {"name": plan.learngene.name, "content_hash": plan.learngene.content_hash}
            if plan.learngene
            else None
        ),
        "zoo.recipe": json.dumps(plan.recipe.to_json(), sort_keys=True),
    }
